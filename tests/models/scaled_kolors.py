"""A reduced-size Kolors for testing `kolora_core.models.random_kolors` end to end on a CPU.

The random writer takes its architectures from a `KolorsSpec`; `REDUCED` keeps every layout that the file
formats and diffsynth's converters depend on (the SDXL block sequence: three levels, two layers each,
cross-attention on the lower two, ChatGLM3's multi-query layout and full vocabulary, the fp16-fix VAE at full
size) and shrinks the widths. diffsynth's `SDXLUNet.__init__` hard-codes full size, so `ScaledKolorsUNet`
lays out the same blocks from a diffusers UNet config (`build_blocks`); at Kolors' config it equals
`SDXLUNet(is_kolors=True)` (tested), and `register_reduced_unet` adds its key hash to diffsynth's
detection table the way diffsynth lists its own models, so kolora's loader detects the reduced file too.
"""

from __future__ import annotations

from typing import Any

import torch
from diffsynth.models.sd_unet import AttentionBlock, DownSampler, PopBlock, PushBlock, ResnetBlock, Timesteps, UpSampler
from diffsynth.models.sdxl_unet import SDXLUNet
from diffsynth.models.utils import hash_state_dict_keys

from kolora_core.models.random_kolors import CHATGLM3_6B, KOLORS_UNET, KolorsSpec, unet_skeleton

REDUCED_UNET: dict[str, Any] = KOLORS_UNET | {
    "block_out_channels": [32, 64, 128],
    "attention_head_dim": [1, 2, 4],  # diffusers' name for the number of heads: 32-wide heads
    "transformer_layers_per_block": [1, 1, 2],
    "cross_attention_dim": 64,
    "encoder_hid_dim": 32,  # the reduced ChatGLM's hidden size
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
}
# ChatGLM3's layout at kolora's tiny size (kolora_core.models.tiny), full vocabulary
REDUCED_TEXT_ENCODER: dict[str, Any] = CHATGLM3_6B | {
    "num_layers": 2,
    "hidden_size": 32,
    "ffn_hidden_size": 64,
    "kv_channels": 8,
    "num_attention_heads": 4,
    "seq_length": 512,
}
REDUCED = KolorsSpec(text_encoder=REDUCED_TEXT_ENCODER, unet=REDUCED_UNET, text_encoder_shard="2MB")


def build_blocks(config: dict[str, Any]) -> list[torch.nn.Module]:
    """diffsynth's flat block list for a diffusers SDXL-layout UNet config (diffusers' channel arithmetic)."""
    channels, layers, time_dim = config["block_out_channels"], config["layers_per_block"], config["block_out_channels"][0] * 4
    heads, depth, cross = config["attention_head_dim"], config["transformer_layers_per_block"], config["cross_attention_dim"]

    def attention(level: int, width: int, n_layers: int) -> AttentionBlock:
        return AttentionBlock(heads[level], width // heads[level], width, n_layers, cross)

    blocks: list[torch.nn.Module] = []
    last = len(channels) - 1
    for level, kind in enumerate(config["down_block_types"]):
        width = channels[level]
        for layer in range(layers):
            blocks.append(ResnetBlock(channels[max(level - 1, 0)] if layer == 0 else width, width, time_dim))
            if kind.startswith("CrossAttn"):
                blocks.append(attention(level, width, depth[level]))
            blocks.append(PushBlock())
        if level < last:
            blocks += [DownSampler(width), PushBlock()]
    blocks += [ResnetBlock(channels[-1], channels[-1], time_dim), attention(last, channels[-1], depth[-1])]
    blocks.append(ResnetBlock(channels[-1], channels[-1], time_dim))
    up_channels, up_depth = channels[::-1], depth[::-1]
    for level, kind in enumerate(config["up_block_types"]):
        width, previous = up_channels[level], up_channels[max(level - 1, 0)]
        below = up_channels[min(level + 1, last)]
        for layer in range(layers + 1):
            skip = below if layer == layers else width
            blocks += [PopBlock(), ResnetBlock((previous if layer == 0 else width) + skip, width, time_dim)]
            if kind.startswith("CrossAttn"):
                blocks.append(attention(last - level, width, up_depth[level]))
        if level < last:
            blocks.append(UpSampler(width))
    return blocks


def _mlp(width_in: int, width: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(width_in, width), torch.nn.SiLU(), torch.nn.Linear(width, width))


class ScaledKolorsUNet(SDXLUNet):
    """diffsynth's Kolors UNet laid out from `CONFIG` (set by `scaled_unet_class`); forward and converter inherited."""

    CONFIG: dict[str, Any] = KOLORS_UNET

    def __init__(self, is_kolors: bool = True) -> None:
        torch.nn.Module.__init__(self)
        config, c0 = self.CONFIG, self.CONFIG["block_out_channels"][0]
        time_dim = c0 * 4
        self.time_proj = Timesteps(c0)
        self.time_embedding = torch.nn.Sequential(
            torch.nn.Linear(c0, time_dim), torch.nn.SiLU(), torch.nn.Linear(time_dim, time_dim)
        )
        self.add_time_proj = Timesteps(config["addition_time_embed_dim"])
        self.add_time_embedding = torch.nn.Sequential(
            torch.nn.Linear(config["projection_class_embeddings_input_dim"], time_dim),
            torch.nn.SiLU(),
            torch.nn.Linear(time_dim, time_dim),
        )
        self.conv_in = torch.nn.Conv2d(4, c0, kernel_size=3, padding=1)
        self.text_intermediate_proj = torch.nn.Linear(config["encoder_hid_dim"], config["cross_attention_dim"])
        self.blocks = torch.nn.ModuleList(build_blocks(config))
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=c0, num_groups=32, eps=1e-5)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(c0, 4, kernel_size=3, padding=1)
        self.is_kolors = is_kolors


def scaled_unet_class(config: dict[str, Any]) -> type[ScaledKolorsUNet]:
    return type("ReducedKolorsUNet", (ScaledKolorsUNet,), {"CONFIG": config})


def register_reduced_unet(monkeypatch: Any, config: dict[str, Any] = REDUCED_UNET) -> str:
    """Teach diffsynth's single-file detector the reduced UNet (one more row of its own table); returns its hash."""
    from diffsynth.configs import model_config

    digest = hash_state_dict_keys(unet_skeleton(config).state_dict(), with_shape=True)
    rows = [*model_config.model_loader_configs, (None, digest, ["sdxl_unet"], [scaled_unet_class(config)], "diffusers")]
    monkeypatch.setattr(model_config, "model_loader_configs", rows)
    import diffsynth.models.model_manager as manager

    monkeypatch.setattr(manager, "model_loader_configs", rows)
    return digest
