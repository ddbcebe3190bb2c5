"""Both compile scopes leave the UNet the same function and the same module (names, merges, checkpoints)."""

from __future__ import annotations

import pytest
import torch

from kolora_core.models.tiny import build_tiny_models
from kolora_core.models.unet_compile import compile_unet, uncompile_unet


def unet_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(batch, 7, 32, generator=g),
        "add_text_embeds": torch.randn(batch, 32, generator=g),
        "add_time_id": torch.tensor([64, 64, 0, 0, 64, 64] * batch),
    }


@pytest.mark.parametrize("scope", [True, "whole"])
def test_compiled_unet_is_the_same_function_and_module(scope: bool | str) -> None:
    """aot_eager traces and differentiates as inductor does without C++ compilation (inductor: the GPU benches)."""
    unet = build_tiny_models(seed=0)["sdxl_unet"].eval()
    names = [n for n, _ in unet.named_parameters()]
    inputs = unet_inputs()
    with torch.no_grad():
        eager = unet(**inputs)
        torch._dynamo.reset()
        counters = torch._dynamo.utils.counters
        counters.clear()
        compile_unet(unet, scope, backend="aot_eager")
        compiled = unet(**inputs)
        assert counters["stats"]["unique_graphs"] >= 1, "dynamo traced the UNet"
        assert [n for n, _ in unet.named_parameters()] == names, "compiling in place keeps the parameter names"
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        next(unet.parameters()).mul_(1.5)  # a weight written in place (a LoRA merge) reaches the compiled module
        changed = unet(**inputs)
        uncompile_unet(unet)
        assert getattr(unet, "_compiled_call_impl", None) is None
        torch.testing.assert_close(changed, unet(**inputs), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, eager)
