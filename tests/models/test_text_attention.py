"""Cross-attention keys and values made once per batch (`kolora_core.models.text_attention`) on the tiny UNet: the
same UNet output as diffsynth's own layers, no per-call text projections, and a compiled UNet that reads the new
batch's keys without a new graph."""

from __future__ import annotations

import copy

import pytest
import torch

from kolora_core.models.attention import sdpa_context
from kolora_core.models.text_attention import TextAttention, cache_text_attention, text_keys_values
from kolora_core.models.tiny import TEXT_HIDDEN, build_tiny_models
from kolora_core.models.unet_compile import compile_unet

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))


def _inputs(seed: int, batch: int = 2, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    floats = {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(batch, 256, TEXT_HIDDEN, generator=g),
        "add_text_embeds": torch.randn(batch, TEXT_HIDDEN, generator=g),
    }
    ints = {"timestep": torch.tensor([500]), "add_time_id": torch.tensor([64, 64, 0, 0, 64, 64]).repeat(batch)}
    return {**{k: v.to(device, dtype) for k, v in floats.items()}, **{k: v.to(device) for k, v in ints.items()}}


def _unets(device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.nn.Module]:
    plain = build_tiny_models(0)["sdxl_unet"].eval().to(device, dtype)
    cached = copy.deepcopy(plain)
    return plain, cached


@pytest.mark.parametrize("device", ["cpu", CUDA])
@torch.no_grad()
def test_held_keys_give_diffsynths_output_and_the_text_is_projected_once(device: str) -> None:
    dtype = torch.float16 if device == "cuda" else torch.float32  # the GPU: fp16 through cuDNN attention, as sampled
    tolerance = {"atol": 1e-3, "rtol": 1e-3} if device == "cuda" else {"atol": 1e-6, "rtol": 1e-6}
    plain, cached = _unets(device, dtype)
    keys = set(cached.state_dict())
    assert cache_text_attention(cached) == 4 and set(cached.state_dict()) == keys, "LoRA files and merges see the same"
    calls = []
    for module in cached.modules():
        if isinstance(module, TextAttention):
            module.to_k.register_forward_hook(lambda *_: calls.append(1))
    args = _inputs(0, device=device, dtype=dtype)
    with sdpa_context(device):
        expected = plain(**args)
        with text_keys_values(cached, args["encoder_hidden_states"]):
            assert len(calls) == 4, "one key projection per layer for the batch"
            steps = [cached(**{**args, "timestep": torch.tensor([t], device=device)}) for t in (500, 500, 300)]
        assert len(calls) == 4, "the UNet calls project no text"
        torch.testing.assert_close(steps[0], expected, **tolerance)
        torch.testing.assert_close(steps[1], expected, **tolerance)
        assert (steps[2] - expected).abs().max() > 1e-2, "another timestep: another output (the comparison means something)"
        other = _inputs(1, device=device, dtype=dtype)
        torch.testing.assert_close(cached(**other), plain(**other), **tolerance)  # released: diffsynth's own
    assert len(calls) == 8, "released, each layer projects its text again"


@torch.no_grad()
def test_a_compiled_unet_reads_the_next_batchs_keys_in_the_same_graph() -> None:
    plain, cached = _unets()
    cache_text_attention(cached)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compile_unet(cached, "whole", backend="aot_eager")
    for seed in (0, 1):  # same shapes, other text: the buffers change in place
        args = _inputs(seed)
        with text_keys_values(cached, args["encoder_hidden_states"]):
            got = cached(**args)
        torch.testing.assert_close(got, plain(**args), atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
