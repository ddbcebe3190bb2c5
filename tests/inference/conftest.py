"""A LoRA for the tiny UNet made directly (peft-injected, B randomised as if trained, exports written): no training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from kolora_core.lora.export import unet_layout, write_exports
from kolora_core.lora.format import LORA_FILE, load_lora, lora_state_from_model, save_lora
from kolora_core.models.tiny import build_tiny_models
from tests.conftest import mark_complete


def write_tiny_lora(out: Path, seed: int = 0, rank: int = 16, alpha: float = 4.0) -> Path:
    """A complete train-stage output dir holding a LoRA for `build_tiny_models(seed=0)`'s UNet."""
    unet = build_tiny_models(seed=0)["sdxl_unet"]
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out"])
    unet = inject_adapter_in_model(config, unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            param.requires_grad_("lora_" in name)
    out.mkdir(parents=True, exist_ok=True)
    save_lora(out / LORA_FILE, lora_state_from_model(unet), rank=rank, alpha=alpha, extra={"base_model": "tiny"})
    write_exports(out, load_lora(out / LORA_FILE), unet_layout(unet), output_name="tiny-style")  # as the train stage does
    return mark_complete(out)


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lora(tmp_path_factory.mktemp("lora"))
