"""generate.fp8's layers on the tiny UNet: which layers turn FP8, how close their products stay, and that a weight
change (a LoRA merge) reaches the e4m3 copy also in compiled code. CPUs run `torch._scaled_mm` too (slowly), so
this is the real product, not a stand-in; tests/models/test_unet_compile.py holds the CUDA check."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch

from kolora_core.models import fp8
from kolora_core.models.fp8 import Fp8Linear, fp8_unsupported, refresh, to_fp8
from kolora_core.models.tiny import TEXT_HIDDEN, build_tiny_models


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_only_the_feed_forward_layers_turn_fp8_and_names_and_state_stay() -> None:
    unet = build_tiny_models(0)["sdxl_unet"]
    keys = set(unet.state_dict())
    linears = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]
    assert to_fp8(unet) == 8, "4 transformer layers x (GEGLU projection, output layer)"
    converted = [n for n, m in unet.named_modules() if isinstance(m, Fp8Linear)]
    assert converted and all(n.endswith((".act_fn.proj", ".ff")) and "transformer_blocks" in n for n in converted)
    assert [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)] == linears, "same paths, still Linear"
    assert set(unet.state_dict()) == keys, "the e4m3 copies are not saved: checkpoints and LoRA files are unchanged"
    assert to_fp8(unet) == 0 and refresh(unet) == 8, "converting again converts nothing"


def test_with_projections_the_attention_blocks_per_step_products_turn_fp8_but_not_the_text_keys() -> None:
    unet = build_tiny_models(0)["sdxl_unet"]
    assert to_fp8(unet) == 8 and to_fp8(unet, projections=True) == 32, "4 blocks x (proj_in, proj_out, 6 attention)"
    names = [n for n, m in unet.named_modules() if isinstance(m, Fp8Linear)]
    kinds = {re.sub(r"^blocks\.\d+\.(transformer_blocks\.\d+\.)?", "", n) for n in names}
    attention = {f"attn1.to_{p}" for p in ("q", "k", "v", "out")} | {"attn2.to_q", "attn2.to_out"}
    assert kinds == {"proj_in", "proj_out", "act_fn.proj", "ff"} | attention, "not attn2's to_k / to_v: the text's"


def _as_fp8(layer: torch.nn.Linear) -> Fp8Linear:
    layer.__class__ = Fp8Linear
    layer.refresh()
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_layer_product_stays_within_a_few_percent(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512).to(dtype)
    x = torch.randn(2, 77, 256, dtype=dtype) * torch.linspace(0.1, 10, 256, dtype=dtype)  # uneven channels
    x[0, 3] *= 50  # one outlier token sets the scale: e4m3's exponent keeps the other rows' precision
    expected = layer(x)
    got = _as_fp8(layer)(x)
    assert got.dtype == dtype and got.shape == expected.shape
    assert _relative(got, expected) < 0.05
    assert _relative(got[1], expected[1]) < 0.05, "the outlier does not cost the other rows their precision"


def test_the_unet_output_stays_close_and_differs() -> None:
    models = build_tiny_models(0)
    unet = models["sdxl_unet"].eval()
    g = torch.Generator().manual_seed(0)
    args = {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(2, 256, TEXT_HIDDEN, generator=g),
        "add_time_id": torch.tensor([64, 64, 0, 0, 64, 64]).repeat(2),
        "add_text_embeds": torch.randn(2, TEXT_HIDDEN, generator=g),
    }
    with torch.no_grad():
        before = unet(**args)
        to_fp8(unet)
        after = unet(**args)
    assert 0 < _relative(after, before) < 0.02, "e4m3 changes the math a little, not the picture"


def test_a_weight_change_reaches_compiled_code_after_refresh() -> None:
    """LoRA merges write the master weight; the compiled layer reads the e4m3 buffers, refreshed in place."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 128))
    x = torch.randn(4, 16, 64)
    _as_fp8(block[1])
    compiled = torch.compile(block, backend="aot_eager", dynamic=False)
    with torch.no_grad():
        with fp8.calibration(block):  # as the sampler's first step: the layer's first input scale
            compiled(x)
        first = compiled(x)
        block[1].weight.mul_(-2)  # as merge_lora adds the update in place
        stale = compiled(x)
        refresh(block)
        fresh = compiled(x)
        eager = block(x)
    assert torch.equal(stale, first), "without refresh the product still reads the old e4m3 copy"
    torch.testing.assert_close(fresh, eager)
    assert _relative(fresh, torch.nn.functional.linear(block[0](x), block[1].weight, block[1].bias)) < 0.05


def _compiled_fp8_layer() -> tuple[torch.nn.Sequential, Fp8Linear, torch.Tensor, torch.Tensor, list[int], object]:
    """One FP8 layer in a module compiled by a backend that counts the graphs it is given (traced: one 1 each); its
    input and the fp32 product of it."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(64, 128))
    layer = _as_fp8(block[0])
    x = torch.randn(4, 16, 64)
    reference = torch.nn.functional.linear(x, layer.weight, layer.bias)
    traced: list[int] = []

    def counting(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        traced.append(1)
        return gm.forward

    return block, layer, x, reference, traced, torch.compile(block, backend=counting, dynamic=False)


def test_compiled_the_input_scale_is_the_previous_calls_and_the_first_call_is_eager() -> None:
    """Delayed scaling: a compiled call quantizes with the scale the call before it found (with headroom), so the
    cast need not wait for its own amax pass; the first call after `to_fp8` runs eagerly to find one."""
    block, layer, x, reference, traced, compiled = _compiled_fp8_layer()
    with torch.no_grad():
        with fp8.calibration(block):
            first = compiled(x)
        assert traced == [] and layer.calibrated, "the first call ran eagerly and set the layer's scale"
        headroom = fp8._scale(x.reshape(-1, 64)) * fp8.INPUT_HEADROOM
        torch.testing.assert_close(layer.input_scale, headroom)
        assert isinstance(fp8.calibration(block), contextlib.nullcontext), "calibrated: compiled code runs"
        second = compiled(x)
        assert traced == [1]
        outgrown = compiled(x * 16)  # 16x the previous call's largest value: past the 2x headroom, it saturates
        settled = compiled(x * 16)  # ... and the call after it has the scale it found
    assert _relative(first, reference) < 0.05 and _relative(second, reference) < 0.05
    assert _relative(settled, reference * 16 - layer.bias * 15) < 0.05 < _relative(outgrown, reference * 16 - layer.bias * 15)


def test_compiled_before_any_eager_call_a_layer_uses_its_own_scale_then_the_previous_calls() -> None:
    """Without `calibration` the input scale is still 0: the compiled call must not quantize with it (the product
    would be the bias alone); it takes the call's own scale, and the next compiled call the buffer's."""
    _, layer, x, reference, traced, compiled = _compiled_fp8_layer()
    with torch.no_grad():
        first = compiled(x)
        assert traced == [1] and layer.calibrated
        layer.input_scale.div_(64)  # a scale that saturates: the next call must read it from the buffer
        second = compiled(x)
    assert traced == [1, 1], "traced again once the layer had a scale"
    assert _relative(first, reference) < 0.05 < _relative(second, reference)


def test_gpus_without_fp8_tensor_cores_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fp8_unsupported("cpu") is None
    monkeypatch.setattr(fp8.torch.cuda, "get_device_capability", lambda device: (8, 0))
    monkeypatch.setattr(fp8.torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-80GB")
    assert fp8_unsupported("cuda") == "NVIDIA A100-SXM4-80GB (sm80) has no FP8 tensor cores (sm89+: L4, L40S, H100, H200)"
    monkeypatch.setattr(fp8.torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert fp8_unsupported("cuda:1") is None


@pytest.mark.skipif(
    not torch.cuda.is_available() or fp8_unsupported("cuda") is not None, reason="needs a GPU with FP8 tensor cores"
)
@pytest.mark.parametrize("scope", [True, "whole"])
def test_inductor_compiles_the_fp8_unet_close_to_fp16_and_sees_refreshed_weights(scope: bool | str) -> None:
    """The stage's path on a GPU: fp16 UNet, FP8 feed-forward layers, inductor (the CPU tests trace with aot_eager)."""
    from kolora_core.models.unet_compile import compile_unet
    from tests.models.test_unet_compile import unet_inputs

    unet = build_tiny_models(0)["sdxl_unet"].to("cuda", torch.float16).eval()
    inputs = {k: v.to("cuda", torch.float16 if v.is_floating_point() else v.dtype) for k, v in unet_inputs().items()}
    torch._dynamo.reset()
    with torch.no_grad():
        fp16 = unet(**inputs)
        to_fp8(unet)
        compile_unet(unet, scope)
        with fp8.calibration(unet):  # the sampler's first step: eager, the layers' first input scales
            unet(**inputs)
        compiled = unet(**inputs)
        assert 0 < _relative(compiled, fp16) < 0.03
        for module in unet.modules():
            if isinstance(module, Fp8Linear):
                module.weight.mul_(0.5)
        refresh(unet)
        halved = unet(**inputs)
    assert _relative(halved, compiled) > 1e-3, "the compiled graph reads the refreshed e4m3 copies"
