"""Random weights of the real Kolors architectures, in memory, for the GPU benchmarks.

Both GPU benchmarks start here so that kolora and the seed baseline are timed on identical models. The
architectures and the values' rule (matrices N(0, 0.02), norm weights 1, the rest 0) are the ones
`models.source: random` writes to disk (`kolora_core.models.random_kolors`: ChatGLM3-6B, the 2.58 B-parameter
Kolors UNet, the SDXL VAE), as shared/bench/seed_baseline.py builds them; here the modules are constructed
with their parameters on the meta device and filled on the target device from the global RNG, which is faster
than writing the 18 GB and reading them back (bench/e2e_bench.py times that path). Buffers keep their computed
values (ChatGLM's rotary frequencies; the seed baseline leaves them uninitialised).
"""

from __future__ import annotations

import torch

from kolora_core.models.random_kolors import CHATGLM3_6B, empty_skeleton, materialise_module, text_encoder_module


def real_kolors(device: str, parts: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """The requested diffsynth model names (kolors_text_encoder, sdxl_unet, sdxl_vae_encoder, sdxl_vae_decoder)."""
    from diffsynth.models.sdxl_unet import SDXLUNet
    from diffsynth.models.sdxl_vae_decoder import SDXLVAEDecoder
    from diffsynth.models.sdxl_vae_encoder import SDXLVAEEncoder

    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    if "kolors_text_encoder" in parts:
        models["kolors_text_encoder"] = materialise_module(text_encoder_module(CHATGLM3_6B), device, torch.float16).eval()
    if "sdxl_unet" in parts:
        models["sdxl_unet"] = materialise_module(empty_skeleton(lambda: SDXLUNet(is_kolors=True)), device, torch.float16)
    with torch.device(device):
        if "sdxl_vae_encoder" in parts:
            models["sdxl_vae_encoder"] = SDXLVAEEncoder().eval()
        if "sdxl_vae_decoder" in parts:
            models["sdxl_vae_decoder"] = SDXLVAEDecoder().eval()
    return models
