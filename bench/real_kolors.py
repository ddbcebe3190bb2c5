"""Random weights of the real Kolors architectures, built as shared/bench/seed_baseline.py builds them.

Both GPU benchmarks start here so that kolora and the seed baseline are timed on identical models:
ChatGLM3-6B (the seed baseline's config), the 2.58 B-parameter Kolors UNet and the SDXL VAE, small normal
weights with unit norms, constructed on the meta device and materialised on the target device.
"""

from __future__ import annotations

import torch


def _init_small(module: torch.nn.Module) -> torch.nn.Module:
    for name, param in module.named_parameters():
        if "norm" in name and name.endswith("weight"):
            param.data.fill_(1.0)
        elif param.dim() >= 2:
            param.data.normal_(0, 0.02)
        else:
            param.data.zero_()
    return module


def real_kolors(device: str, parts: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """The requested diffsynth model names (kolors_text_encoder, sdxl_unet, sdxl_vae_encoder, sdxl_vae_decoder)."""
    from diffsynth.models.kolors_text_encoder import ChatGLMConfig, ChatGLMModel
    from diffsynth.models.sdxl_unet import SDXLUNet
    from diffsynth.models.sdxl_vae_decoder import SDXLVAEDecoder
    from diffsynth.models.sdxl_vae_encoder import SDXLVAEEncoder

    config = ChatGLMConfig(
        num_layers=28, hidden_size=4096, ffn_hidden_size=13696, num_attention_heads=32, kv_channels=128,
        multi_query_attention=True, multi_query_group_num=2, padded_vocab_size=65024, seq_length=32768,
        add_qkv_bias=True, original_rope=True, use_cache=False, rmsnorm=True, layernorm_epsilon=1e-5,
        apply_residual_connection_post_layernorm=False, post_layer_norm=True, add_bias_linear=False,
        torch_dtype="float16",
    )  # fmt: skip
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    with torch.device("meta"):
        if "kolors_text_encoder" in parts:
            models["kolors_text_encoder"] = ChatGLMModel(config, empty_init=False)
        if "sdxl_unet" in parts:
            models["sdxl_unet"] = SDXLUNet(is_kolors=True)
    models = {name: _init_small(m.to_empty(device=device).half()) for name, m in models.items()}
    if "kolors_text_encoder" in models:
        models["kolors_text_encoder"].eval()
    with torch.device(device):
        if "sdxl_vae_encoder" in parts:
            models["sdxl_vae_encoder"] = SDXLVAEEncoder().eval()
        if "sdxl_vae_decoder" in parts:
            models["sdxl_vae_decoder"] = SDXLVAEDecoder().eval()
    return models
