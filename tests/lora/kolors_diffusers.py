"""diffusers' side of the Kolors UNet for the export tests: the full-size config and a LoRA-loading pipeline."""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, KolorsPipeline, UNet2DConditionModel

from kolora_core.models.random_kolors import KOLORS_UNET  # Kolors' unet/config.json, as the random source writes it


def meta_diffusers_unet() -> torch.nn.Module:
    """Full-size Kolors on the meta device (`test_kolors_config_is_the_diffsynth_unet` proves the config's every
    parameter name and shape against diffsynth's UNet)."""
    with torch.device("meta"):
        return UNet2DConditionModel(**KOLORS_UNET)


def kolors_pipeline(unet: torch.nn.Module) -> KolorsPipeline:
    """A KolorsPipeline around the UNet: its LoRA loaders need no text encoder, VAE or tokenizer."""
    return KolorsPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=EulerDiscreteScheduler())
