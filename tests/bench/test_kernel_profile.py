"""bench/kernel_profile.py's GPU summary, on events shaped as torch.profiler makes them on a CUDA machine (none
here): what docs/benchmarks.md says about where the time goes is only as right as this sum."""

from __future__ import annotations

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent

from bench.kernel_profile import summarize


def gpu(name: str, start: float, end: float, annotation: bool = False) -> FunctionEvent:
    return FunctionEvent(
        id=0, name=name, thread=7, start_us=start, end_us=end, use_device="cuda", device_type=DeviceType.CUDA,
        is_user_annotation=annotation,
    )  # fmt: skip


def mm(shapes: list[list[int]], kernels: list[tuple[str, float]]) -> FunctionEvent:
    event = FunctionEvent(id=1, name="aten::mm", thread=1, start_us=0, end_us=1, input_shapes=shapes, use_device="cuda")
    for name, duration in kernels:
        event.append_kernel(name, 0, duration)
    return event


def test_marked_ranges_on_the_device_timeline_are_not_counted_as_kernels() -> None:
    events = [
        gpu("## Call CompiledFxGraph abc ##", 0, 1000, annotation=True),  # spans the three kernels below
        gpu("nvjet_sm90_hsh_256x128_64x4_1x2_h_bz_coopA_bias_TNT", 0, 600),
        gpu("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", 600, 900),
        gpu("triton_poi_fused_gelu_mul_split_view_3", 900, 1000),
    ]
    summary = summarize(events, repeats=2, cuda=True)
    assert summary["kernel_seconds_per_call"] == pytest.approx(500e-6)
    shares = {kind: entry["share"] for kind, entry in summary["by_kind"].items()}
    assert shares == {"gemm": 0.6, "attention": 0.3, "fused (inductor)": 0.1}
    assert all(not name.startswith("##") for name, _ in summary["top_kernels"])


def test_matrix_products_split_by_shape_count_each_launched_gemm_once() -> None:
    wide = mm([[16384, 1280], [1280, 5120]], [("nvjet_sm90_wide", 3000.0), ("## Call CompiledFxGraph x ##", 9000.0)])
    nested = mm([[16384, 1280], [1280, 5120]], [])
    nested.kernels = wide.kernels  # torch.profiler lifts a namesake child's kernels into its parent: one list, twice
    thin = mm([[16384, 1280], [1280, 16]], [("nvjet_sm90_thin", 200.0)])
    split = summarize([wide, nested, thin], repeats=1, cuda=True)["gemm_seconds_by_shape"]
    assert split == {"wide": 0.003, "thin": 0.0002}
