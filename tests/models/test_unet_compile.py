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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor's GPU kernels need a CUDA device")
def test_vae_decoder_compiled_by_inductor_decodes_as_eager_on_a_gpu() -> None:
    """What the generate stage does when it compiles (the CPU test uses aot_eager): bf16, static shape, one graph.
    Inductor fuses the GroupNorms and keeps fp32 inside them, so its bf16 pixels are not eager's bit for bit (0.7%
    of them differed by up to 0.0625 on an H200): both are held to the fp32 decode instead, the compiled one no
    further from it than eager bf16 is."""
    from kolora_core.models.sampler import KolorsSampler

    models = build_tiny_models(seed=0)
    sampler = KolorsSampler(
        None, models["sdxl_unet"].to("cuda"), models["sdxl_vae_decoder"].to("cuda"), device="cuda", vae_dtype=torch.float32
    )
    latents = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to("cuda")
    reference = torch.cat(sampler.decode(latents))
    sampler.vae_decoder.to(torch.bfloat16)
    eager = torch.cat(sampler.decode(latents))
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    sampler.configure_vae(compiled=True)
    compiled = torch.cat(sampler.decode(latents))
    assert counters["stats"]["unique_graphs"] == 1, "one image at a time: one graph, no recompiles"
    eager_error, compiled_error = (float((x - reference).abs().mean()) for x in (eager, compiled))
    assert compiled_error <= 1.5 * eager_error + 1e-4, (compiled_error, eager_error)
    assert float((compiled - reference).abs().max()) <= 0.1  # 0.1 of the [-1, 1] range: ~13 of 255 levels
