"""diffusers' side of the Kolors UNet for the export tests: the full-size config and a LoRA-loading pipeline."""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, KolorsPipeline, UNet2DConditionModel

# Kwai-Kolors/Kolors-diffusers unet/config.json (the fields that differ from UNet2DConditionModel's defaults);
# `test_kolors_config_is_the_diffsynth_unet` proves every parameter name and shape against diffsynth's UNet.
KOLORS_UNET = {
    "sample_size": 128,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 5632,
    "encoder_hid_dim": 4096,
    "encoder_hid_dim_type": "text_proj",
}


def meta_diffusers_unet() -> torch.nn.Module:
    with torch.device("meta"):
        return UNet2DConditionModel(**KOLORS_UNET)


def kolors_pipeline(unet: torch.nn.Module) -> KolorsPipeline:
    """A KolorsPipeline around the UNet: its LoRA loaders need no text encoder, VAE or tokenizer."""
    return KolorsPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=EulerDiscreteScheduler())
