"""Tiny random-weight models with the Kolors architecture, built from diffsynth 1.1.9's own classes.

The smoke profile and the tests need a Kolors model that runs on a laptop CPU in seconds. Shrinking
the real classes (not writing look-alikes) keeps every code path real: `SDXLUNet.forward` with
`is_kolors` text projection, the same `ResnetBlock`/`AttentionBlock`/`to_q,to_k,to_v,to_out` names
that LoRA targets, the ChatGLM3 encoder with the real Kolors tokenizer, and the VAE's scaling.
`SDXLUNet.__init__` and the VAE constructors hard-code full size, so the subclasses call
`torch.nn.Module.__init__` and lay out small blocks with the same wiring.
"""

from __future__ import annotations

import torch
from diffsynth.models.kolors_text_encoder import ChatGLMConfig, ChatGLMModel
from diffsynth.models.sd_unet import AttentionBlock, DownSampler, PopBlock, PushBlock, ResnetBlock, Timesteps, UpSampler
from diffsynth.models.sd_vae_decoder import VAEAttentionBlock
from diffsynth.models.sdxl_unet import SDXLUNet
from diffsynth.models.sdxl_vae_decoder import SDXLVAEDecoder
from diffsynth.models.sdxl_vae_encoder import SDXLVAEEncoder

TINY_ARCHITECTURE = "kolors-tiny-v1"
TEXT_HIDDEN = 32  # ChatGLM hidden size (real: 4096)
CROSS_DIM = 64  # UNet cross-attention width after text_intermediate_proj (real: 2048)
TIME_DIM = 128  # UNet time embedding width (real: 1280)
ADD_TIME_DIM = 8  # per add_time_id entry (real: 256)


class TinyKolorsUNet(SDXLUNet):
    """Two resolutions, one cross-attention level: the SDXL UNet wiring at ~1 M parameters."""

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.time_proj = Timesteps(32)
        self.time_embedding = torch.nn.Sequential(
            torch.nn.Linear(32, TIME_DIM), torch.nn.SiLU(), torch.nn.Linear(TIME_DIM, TIME_DIM)
        )
        self.add_time_proj = Timesteps(ADD_TIME_DIM)
        self.add_time_embedding = torch.nn.Sequential(
            torch.nn.Linear(TEXT_HIDDEN + 6 * ADD_TIME_DIM, TIME_DIM), torch.nn.SiLU(), torch.nn.Linear(TIME_DIM, TIME_DIM)
        )
        self.conv_in = torch.nn.Conv2d(4, 32, kernel_size=3, padding=1)
        self.text_intermediate_proj = torch.nn.Linear(TEXT_HIDDEN, CROSS_DIM)
        self.blocks = torch.nn.ModuleList(
            [
                ResnetBlock(32, 32, TIME_DIM),
                PushBlock(),
                DownSampler(32),
                PushBlock(),
                ResnetBlock(32, 64, TIME_DIM),
                AttentionBlock(2, 32, 64, 1, CROSS_DIM),
                PushBlock(),
                ResnetBlock(64, 64, TIME_DIM),
                AttentionBlock(2, 32, 64, 1, CROSS_DIM),
                ResnetBlock(64, 64, TIME_DIM),
                PopBlock(),
                ResnetBlock(128, 64, TIME_DIM),
                AttentionBlock(2, 32, 64, 1, CROSS_DIM),
                PopBlock(),
                ResnetBlock(96, 64, TIME_DIM),
                AttentionBlock(2, 32, 64, 1, CROSS_DIM),
                UpSampler(64),
                PopBlock(),
                ResnetBlock(96, 32, TIME_DIM),
                PopBlock(),
                ResnetBlock(64, 32, TIME_DIM),
            ]
        )
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=32, num_groups=32, eps=1e-5)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(32, 4, kernel_size=3, padding=1)
        self.is_kolors = True


class TinyVAEEncoder(SDXLVAEEncoder):
    """Three downsamplers (the real /8 latent grid) at 32-64 channels."""

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.scaling_factor = 0.13025
        self.quant_conv = torch.nn.Conv2d(8, 8, kernel_size=1)
        self.conv_in = torch.nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.blocks = torch.nn.ModuleList(
            [
                ResnetBlock(32, 32, eps=1e-6),
                DownSampler(32, padding=0, extra_padding=True),
                ResnetBlock(32, 64, eps=1e-6),
                DownSampler(64, padding=0, extra_padding=True),
                ResnetBlock(64, 64, eps=1e-6),
                DownSampler(64, padding=0, extra_padding=True),
                ResnetBlock(64, 64, eps=1e-6),
                VAEAttentionBlock(1, 64, 64, 1, eps=1e-6),
            ]
        )
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=64, num_groups=32, eps=1e-6)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(64, 8, kernel_size=3, padding=1)


class TinyVAEDecoder(SDXLVAEDecoder):
    """Mirror of `TinyVAEEncoder`: latent grid x8 back to pixels."""

    def __init__(self) -> None:
        torch.nn.Module.__init__(self)
        self.scaling_factor = 0.13025
        self.post_quant_conv = torch.nn.Conv2d(4, 4, kernel_size=1)
        self.conv_in = torch.nn.Conv2d(4, 64, kernel_size=3, padding=1)
        self.blocks = torch.nn.ModuleList(
            [
                ResnetBlock(64, 64, eps=1e-6),
                VAEAttentionBlock(1, 64, 64, 1, eps=1e-6),
                UpSampler(64),
                ResnetBlock(64, 64, eps=1e-6),
                UpSampler(64),
                ResnetBlock(64, 32, eps=1e-6),
                UpSampler(32),
                ResnetBlock(32, 32, eps=1e-6),
            ]
        )
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=32, num_groups=32, eps=1e-5)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(32, 3, kernel_size=3, padding=1)


def tiny_chatglm_config() -> ChatGLMConfig:
    """ChatGLM3's layout (multi-query attention, RoPE, RMSNorm) at hidden size 32.

    The vocabulary stays full size: the real Kolors tokenizer emits ids up to 64,797.
    """
    return ChatGLMConfig(
        num_layers=2,
        hidden_size=TEXT_HIDDEN,
        ffn_hidden_size=64,
        kv_channels=8,
        num_attention_heads=4,
        multi_query_attention=True,
        multi_query_group_num=2,
        padded_vocab_size=65024,
        seq_length=512,
        add_qkv_bias=True,
        original_rope=True,
        use_cache=False,
        rmsnorm=True,
        layernorm_epsilon=1e-5,
        apply_residual_connection_post_layernorm=False,
        post_layer_norm=True,
        add_bias_linear=False,
        torch_dtype="float32",
        architectures=["ChatGLMModel"],
    )


def _init_random(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Small normal weights, unit norms (zero RMSNorm weights give NaN), zero biases."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
            else:
                param.zero_()
    return module


def build_tiny_models(seed: int = 0) -> dict[str, torch.nn.Module]:
    """The four Kolors components with deterministic random weights, keyed by diffsynth model name."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "kolors_text_encoder": _init_random(ChatGLMModel(tiny_chatglm_config(), empty_init=False), generator).eval(),
        "sdxl_unet": _init_random(TinyKolorsUNet(), generator),
        "sdxl_vae_encoder": _init_random(TinyVAEEncoder(), generator).eval(),
        "sdxl_vae_decoder": _init_random(TinyVAEDecoder(), generator).eval(),
    }
