"""Applying a LoRA to a base model by merging it into the weights, at the trained strength.

peft scales the update by alpha/rank during training, so inference must merge
`W += strength * (alpha/rank) * B @ A`; the seed merged half of that, and diffsynth's
`ModelManager.load_lora` forgets the /rank. This is the only merge path kolora has. The other variants merge what
their peft layer computes (s = alpha/rank; `tests/lora/test_merge.py` proves each equal to peft's own forward):

* DoRA: `m / ||W + s B A|| * (W + s B A)`, the norm per output row (peft's `lora_magnitude_vector` m); a strength
  other than 1 interpolates between the base and that weight, as ComfyUI applies DoRA;
* LoHa: `W += strength * s * (w1_a @ w1_b) * (w2_a @ w2_b)` (Hadamard product);
* LoKr: `W += strength * s * kron(w1, w2)`, each factor full or a low-rank product (`lokr_w2_a @ lokr_w2_b`).
"""

from __future__ import annotations

import torch

from kolora_core.errors import KoloraError
from kolora_core.lora.format import LoRAFile


def _factor(parts: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A LoKr factor: stored whole (`lokr_w1`) or as a low-rank product (`lokr_w1_a @ lokr_w1_b`)."""
    if name in parts:
        return parts[name].float()
    return parts[name + "_a"].float() @ parts[name + "_b"].float()


def delta_weight(lora: LoRAFile, module: str, weight: torch.Tensor, strength: float) -> torch.Tensor:
    """What `module`'s weight becomes minus what it is, in fp32, for the file's variant at `strength`."""
    parts, s = lora.parts(module), lora.scale
    if lora.variant == "loha":
        return (
            strength
            * s
            * (parts["hada_w1_a"].float() @ parts["hada_w1_b"].float())
            * (parts["hada_w2_a"].float() @ parts["hada_w2_b"].float())
        )
    if lora.variant == "lokr":
        return strength * s * torch.kron(_factor(parts, "lokr_w1"), _factor(parts, "lokr_w2"))
    update = parts["lora_B"].float() @ parts["lora_A"].float()
    if lora.variant != "dora":
        return update * (strength * s)
    base = weight.float()
    combined = base + s * update.to(base.device)
    magnitude = parts["lora_magnitude_vector"].float().to(base.device)
    full = (magnitude / torch.linalg.norm(combined, dim=1))[:, None] * combined
    return strength * (full - base)


@torch.no_grad()
def merge_lora(model: torch.nn.Module, lora: LoRAFile, strength: float = 1.0) -> int:
    """Add the adapter's update at `strength` to each targeted Linear; returns how many were merged.

    Every LoRA module must exist in the model with matching shapes: a silent partial merge (the
    seed's `strict=False`) would render images without the style and nobody would notice.
    """
    named = dict(model.named_modules())
    for module_name in lora.modules():
        linear = named.get(module_name)
        if not isinstance(linear, torch.nn.Linear):
            raise KoloraError(
                f"LoRA module '{module_name}' is not a Linear layer of this UNet: the LoRA was trained on another model"
            )
        delta = delta_weight(lora, module_name, linear.weight, strength)
        if delta.shape != linear.weight.shape:
            raise KoloraError(
                f"LoRA module '{module_name}' makes an update of shape {tuple(delta.shape)}, "
                f"the UNet layer is {linear.out_features}x{linear.in_features}: wrong base model"
            )
        linear.weight += delta.to(device=linear.weight.device, dtype=linear.weight.dtype)
    return len(lora.modules())
