"""Merging a LoRA gives exactly what peft computed during training (the seed's half-strength bug can't recur)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from kolora_core.errors import KoloraError
from kolora_core.lora.format import load_lora, lora_state_from_model, save_lora
from kolora_core.lora.merge import merge_lora
from kolora_core.models.tiny import CROSS_DIM, TEXT_HIDDEN, build_tiny_models


def _unet_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "sample": torch.randn(1, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 7, TEXT_HIDDEN, generator=g),
        "add_time_id": torch.tensor([64, 64, 0, 0, 64, 64]),
        "add_text_embeds": torch.randn(1, TEXT_HIDDEN, generator=g),
    }


@pytest.fixture
def peft_unet_and_lora(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    unet = build_tiny_models(seed=0)["sdxl_unet"].eval()
    config = LoraConfig(r=16, lora_alpha=4.0, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out"])
    unet = inject_adapter_in_model(config, unet)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # as if trained: B is no longer zero
            param.requires_grad_("lora_" in name)
    path = tmp_path / "lora.safetensors"
    save_lora(path, lora_state_from_model(unet), rank=16, alpha=4.0, extra={})
    return unet, path


def test_merge_at_strength_one_equals_peft(peft_unet_and_lora: tuple[torch.nn.Module, Path]) -> None:
    peft_unet, path = peft_unet_and_lora
    with torch.no_grad():
        expected = peft_unet(**_unet_inputs())
        base = build_tiny_models(seed=0)["sdxl_unet"].eval()
        without = base(**_unet_inputs())
        assert merge_lora(base, load_lora(path), strength=1.0) == 32
        merged = base(**_unet_inputs())
    assert not torch.allclose(without, expected, atol=1e-4), "the LoRA must change the output for this test to mean anything"
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)


def test_strength_scales_the_update(peft_unet_and_lora: tuple[torch.nn.Module, Path]) -> None:
    _, path = peft_unet_and_lora
    lora = load_lora(path)
    module = lora.modules()[0]
    half, full = build_tiny_models(seed=0)["sdxl_unet"], build_tiny_models(seed=0)["sdxl_unet"]
    before = dict(half.named_modules())[module].weight.clone()
    merge_lora(half, lora, strength=0.5)
    merge_lora(full, lora, strength=1.0)
    delta_half = dict(half.named_modules())[module].weight - before
    delta_full = dict(full.named_modules())[module].weight - before
    expected = 0.25 * lora.tensors[module + ".lora_B.default.weight"] @ lora.tensors[module + ".lora_A.default.weight"]
    torch.testing.assert_close(delta_full, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(delta_half, expected / 2, atol=1e-6, rtol=1e-5)


def test_lora_for_another_model_is_refused(peft_unet_and_lora: tuple[torch.nn.Module, Path]) -> None:
    _, path = peft_unet_and_lora
    lora = load_lora(path)
    wide = torch.nn.Module()
    wide.blocks = torch.nn.ModuleList([torch.nn.Linear(CROSS_DIM * 2, CROSS_DIM)])
    with pytest.raises(KoloraError, match="is not a Linear layer of this UNet"):
        merge_lora(wide, lora)


def test_file_without_kolora_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x.lora_A.default.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(KoloraError, match="no kolora metadata"):
        load_lora(tmp_path / "other.safetensors")


@pytest.mark.parametrize("variant", ["dora", "loha", "lokr"])
def test_each_variant_merges_to_peft_forward(variant: str, tmp_path: Path) -> None:
    """The merge generate uses equals peft's own forward of that adapter (trained-looking, non-zero tensors),
    after a round trip through lora.safetensors; strength 0 leaves the base UNet as it was."""
    from kolora_core.config import TrainConfig
    from kolora_core.lora.format import is_adapter_param
    from kolora_core.training.fast_module import adapter_config

    train = TrainConfig(lora_rank=4, lora_alpha=3.0, lora_variant=variant)
    peft_unet = inject_adapter_in_model(adapter_config(train), build_tiny_models(seed=0)["sdxl_unet"].eval())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_unet.named_parameters():
            if is_adapter_param(name):
                param.add_(torch.randn(param.shape, generator=g) * 0.2)
            param.requires_grad_(is_adapter_param(name))
    path = tmp_path / "lora.safetensors"
    save_lora(path, lora_state_from_model(peft_unet), rank=4, alpha=3.0, extra={"variant": variant})
    lora = load_lora(path)
    assert lora.variant == variant and len(lora.modules()) == 32
    with torch.no_grad():
        expected = peft_unet(**_unet_inputs())
        base = build_tiny_models(seed=0)["sdxl_unet"].eval()
        without = base(**_unet_inputs())
        untouched = build_tiny_models(seed=0)["sdxl_unet"].eval()
        merge_lora(untouched, lora, strength=0.0)
        merge_lora(base, lora, strength=1.0)
        merged = base(**_unet_inputs())
        torch.testing.assert_close(untouched(**_unet_inputs()), without, atol=1e-6, rtol=0)
    assert not torch.allclose(without, expected, atol=1e-4), "the adapter must change the output for this test to mean anything"
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
