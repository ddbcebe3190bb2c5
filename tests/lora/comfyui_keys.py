"""ComfyUI's LoRA key mapping for an SDXL-layout UNet, replayed from its rules (ComfyUI is not installed here).

Rules reimplemented (not copied) from ComfyUI @00728eb:
* `comfy/utils.py` `unet_to_diffusers(unet_config)`: diffusers module paths -> SGM paths, walking
  `num_res_blocks`, `transformer_depth` (one entry per down resnet, popped from the front),
  `transformer_depth_middle` and `transformer_depth_output` (popped from the back for the up blocks);
* `comfy/lora.py` `model_lora_keys_unet`: each model weight `diffusion_model.<sgm>.weight` is reachable as
  `lora_unet_<sgm with . -> _>`, each diffusers path as `lora_unet_<diffusers with . -> _>`;
* `comfy/lora.py` `load_lora`: for each mapped name, `.alpha`, `.lora_up.weight`, `.lora_down.weight` are
  consumed; any key of the file left over is logged "lora key not loaded" (and silently ignored);
* the patch applies `up @ down * alpha / rank` with rank = rows of `lora_down` (`comfy/lora.py` weight patch).

The Kolors UNet config is SDXL's (`comfy/supported_models.py` SDXL; Kolors in ComfyUI,
MinusZoneAI/ComfyUI-Kolors-MZ: same depths, `adm_in_channels` 5632).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KOLORS_COMFY_UNET = {
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_middle": 10,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
}
PROJECTIONS = tuple(f"{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0"))


def _transformer(diffusers: str, sgm: str, depth: int) -> dict[str, str]:
    return {
        f"{diffusers}.transformer_blocks.{t}.{p}": f"{sgm}.transformer_blocks.{t}.{p}" for t in range(depth) for p in PROJECTIONS
    }


def unet_to_diffusers_attention(config: dict[str, object]) -> dict[str, str]:
    """diffusers attention projection module -> SGM module, by `unet_to_diffusers`' walk."""
    num_res_blocks = list(config["num_res_blocks"])  # type: ignore[call-overload]
    depth_down = list(config["transformer_depth"])  # type: ignore[call-overload]
    depth_up = list(config["transformer_depth_output"])  # type: ignore[call-overload]
    blocks = len(config["channel_mult"])  # type: ignore[arg-type]
    out: dict[str, str] = {}
    for x in range(blocks):
        n = 1 + (num_res_blocks[x] + 1) * x
        for i in range(num_res_blocks[x]):
            out |= _transformer(f"down_blocks.{x}.attentions.{i}", f"input_blocks.{n}.1", depth_down.pop(0))
            n += 1
    out |= _transformer("mid_block.attentions.0", "middle_block.1", int(config["transformer_depth_middle"]))  # type: ignore[call-overload]
    up_res = list(reversed(num_res_blocks))
    for x in range(blocks):
        n = (up_res[x] + 1) * x
        for i in range(up_res[x] + 1):
            out |= _transformer(f"up_blocks.{x}.attentions.{i}", f"output_blocks.{n}.1", depth_up.pop())
            n += 1
    return out


def model_lora_keys_unet(diffusers_to_sgm: dict[str, str]) -> dict[str, str]:
    """LoRA base name -> model weight key, both spellings ComfyUI accepts for a kohya file."""
    key_map = {"lora_unet_" + sgm.replace(".", "_"): f"diffusion_model.{sgm}.weight" for sgm in diffusers_to_sgm.values()}
    key_map |= {"lora_unet_" + d.replace(".", "_"): f"diffusion_model.{sgm}.weight" for d, sgm in diffusers_to_sgm.items()}
    return key_map


@dataclass
class ComfyLoad:
    """What ComfyUI's `load_lora` would patch, and the file keys it would log as not loaded."""

    patches: dict[str, tuple[torch.Tensor, torch.Tensor, float | None]] = field(default_factory=dict)
    not_loaded: list[str] = field(default_factory=list)

    def update(self, weight_key: str, probe: torch.Tensor) -> torch.Tensor:
        """The patch's `up @ down * alpha/rank`, applied to `probe` (rank-sized products, never the full matrix)."""
        up, down, alpha = self.patches[weight_key]
        scale = 1.0 if alpha is None else alpha / down.shape[0]
        return up.float() @ (down.float() @ probe) * scale


def load_lora(lora: dict[str, torch.Tensor], key_map: dict[str, str]) -> ComfyLoad:
    result, loaded = ComfyLoad(), set()
    for base, weight_key in key_map.items():
        alpha = None
        if f"{base}.alpha" in lora:
            alpha = float(lora[f"{base}.alpha"].item())
            loaded.add(f"{base}.alpha")
        up, down = f"{base}.lora_up.weight", f"{base}.lora_down.weight"
        if up in lora:
            result.patches[weight_key] = (lora[up], lora[down], alpha)
            loaded |= {up, down}
    result.not_loaded = sorted(set(lora) - loaded)
    return result
