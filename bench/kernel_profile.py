"""Where a GPU step's time goes, by kind of kernel: the evidence behind docs/benchmarks.md's "what limits the rest".

FLOP shares say what a step must compute; they do not say where its time goes (attention and normalisation run far
below the GEMM rate). `kernel_breakdown` runs a callable under torch.profiler and sums the GPU time of its kernels
by kind, so an Amdahl bound for a speed-up can be computed from measured times instead of FLOP estimates. Kernels
replayed from a CUDA graph are recorded as well (CUPTI sees graph nodes), so a graphed training step is profiled as
it runs. Where aten operators are recorded too (eager or compiled code, not graph replays), matrix products are
also split into thin ones (a dimension <= 64: the LoRA's rank-16 products, per-image embeddings) and the rest.

On the CPU (the smoke tests) the same categories are applied to the aten operators' own CPU time.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

# first match wins; matched against CUDA kernel names and (CPU) aten operator names
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("attention", r"sdpa|fmha|flash|attention"),
        ("convolution", r"conv|fprop|dgrad|wgrad"),
        ("gemm", r"gemm|nvjet|cutlass|cublas|(^|[_:])(mm|addmm|bmm|matmul|linear)($|_)"),
        ("optimizer", r"multi_tensor|adam|foreach"),
        ("normalization", r"norm"),
        ("fused (inductor)", r"^triton_"),
        ("copy / fill", r"memcpy|memset|copy|fill|cat(_|$)"),
    )
)
THIN = 64


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def _gemm_dims(shapes: list[list[int]]) -> list[int]:
    return [d for shape in shapes[:3] if len(shape) >= 2 for d in shape[-2:]]


def kernel_breakdown(run: Callable[[], object], repeats: int = 3, top: int = 12) -> dict[str, object]:
    """Profile `repeats` calls of `run` (after one call outside the profile); seconds per call by kernel kind."""
    cuda = torch.cuda.is_available()
    run()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - started) / repeats
    summary = summarize(prof.events(), repeats, cuda, top)
    busy = summary["kernel_seconds_per_call"]
    return {
        "wall_seconds_per_call": round(wall, 4),
        **summary,
        "busy_fraction": round(busy / wall, 3) if wall else None,
    }


def summarize(events: Iterable[FunctionEvent], repeats: int, cuda: bool, top: int = 12) -> dict[str, object]:
    """Seconds per call by kind. On the GPU, ranges that code marks (`record_function`, e.g. inductor's
    "## Call CompiledFxGraph ##") are recorded on the device timeline as well; they span kernels, they are not
    kernels, and counting them would count those kernels twice."""
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    gemm_split: dict[str, float] = defaultdict(float)
    seen: set[int] = set()
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    for event in events:
        if cuda and event.device_type == DeviceType.CPU and event.name in ("aten::mm", "aten::addmm", "aten::bmm"):
            dims = _gemm_dims(event.input_shapes)
            fresh = [k for k in event.kernels if id(k) not in seen and kind_of(k.name) == "gemm"]
            seen.update(id(k) for k in fresh)  # an operator nested in its namesake shares its kernels with it
            launched = sum(k.duration for k in fresh)
            gemm_split["thin" if dims and min(dims) <= THIN else "wide"] += launched / 1e6 / repeats
        if event.device_type != wanted or event.is_user_annotation or (not cuda and not event.name.startswith("aten::")):
            continue
        seconds = event.self_device_time_total if cuda else event.self_cpu_time_total
        by_kind[kind_of(event.name)] += seconds / 1e6 / repeats
        by_name[event.name[:120]] += seconds / 1e6 / repeats
    busy = sum(by_kind.values())
    ranked = sorted(by_kind.items(), key=lambda kv: -kv[1])
    return {
        "kernel_seconds_per_call": round(busy, 4),
        "by_kind": {k: {"seconds": round(v, 4), "share": round(v / busy, 3)} for k, v in ranked},
        "gemm_seconds_by_shape": {k: round(v, 4) for k, v in gemm_split.items()} or None,
        "top_kernels": [[name, round(v, 4)] for name, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]],
    }
