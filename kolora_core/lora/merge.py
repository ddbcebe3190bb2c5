"""Applying a LoRA to a base model by merging it into the weights, at the trained strength.

peft scales the update by alpha/rank during training, so inference must merge
`W += strength * (alpha/rank) * B @ A`; the seed merged half of that, and diffsynth's
`ModelManager.load_lora` forgets the /rank. This is the only merge path kolora has.
"""

from __future__ import annotations

import torch

from kolora_core.errors import KoloraError
from kolora_core.lora.format import LoRAFile


@torch.no_grad()
def merge_lora(model: torch.nn.Module, lora: LoRAFile, strength: float = 1.0) -> int:
    """Add `strength * alpha/rank * B @ A` to each targeted Linear; returns how many were merged.

    Every LoRA module must exist in the model with matching shapes: a silent partial merge (the
    seed's `strict=False`) would render images without the style and nobody would notice.
    """
    named = dict(model.named_modules())
    factor = strength * lora.scale
    for module_name in lora.modules():
        linear = named.get(module_name)
        if not isinstance(linear, torch.nn.Linear):
            raise KoloraError(
                f"LoRA module '{module_name}' is not a Linear layer of this UNet: the LoRA was trained on another model"
            )
        down, up = lora.pair(module_name)
        if down.shape[1] != linear.in_features or up.shape[0] != linear.out_features:
            raise KoloraError(
                f"LoRA module '{module_name}' has shape {tuple(up.shape)}x{tuple(down.shape)}, "
                f"the UNet layer is {linear.out_features}x{linear.in_features}: wrong base model"
            )
        delta = (up.to(torch.float32) @ down.to(torch.float32)) * factor
        linear.weight += delta.to(device=linear.weight.device, dtype=linear.weight.dtype)
    return len(lora.modules())
