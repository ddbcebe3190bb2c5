"""The LoRA file kolora writes and how it is applied, with the scale handled in one place.

Format: safetensors with diffsynth/peft keys (`<module path>.lora_A.default.weight`, `.lora_B...`),
the form the seed's `load_state_dict` expects, plus string metadata (rank, alpha, targets, base model
and dataset fingerprints, the run config). peft scales the update by alpha/rank during training, so
inference must merge `W += strength * (alpha/rank) * B @ A`; the seed merged half of that (alpha 2 vs
4), and `ModelManager.load_lora` forgets the /rank entirely. `merge_lora` is the only merge path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kolora_core.errors import KoloraError

LORA_FILE = "lora.safetensors"
FORMAT = "kolora-lora-v1"
_A, _B = ".lora_A.default.weight", ".lora_B.default.weight"


@dataclass(frozen=True)
class LoRAFile:
    """A LoRA's tensors (peft key form) and the facts needed to apply it at the trained strength."""

    tensors: dict[str, torch.Tensor]
    rank: int
    alpha: float
    metadata: dict[str, str]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def modules(self) -> list[str]:
        return sorted(k.removesuffix(_A) for k in self.tensors if k.endswith(_A))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lora_state_from_model(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable LoRA tensors of a peft-injected model, in fp32, detached and contiguous."""
    return {
        name: param.detach().to(torch.float32).contiguous().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad and ".lora_" in name
    }


def save_lora(path: Path, tensors: dict[str, torch.Tensor], rank: int, alpha: float, extra: dict[str, object]) -> None:
    """Write atomically (temp + rename): a LoRA file is either whole or absent."""
    if not tensors:
        raise KoloraError("no LoRA parameters were trained: check train.lora_target_modules against the UNet's module names")
    metadata = {"format": FORMAT, "rank": str(rank), "alpha": repr(float(alpha))}
    metadata |= {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True) for k, v in extra.items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    tmp.replace(path)


def load_lora(path: Path) -> LoRAFile:
    if not path.exists():
        raise KoloraError(f"LoRA file {path} does not exist: pass the train stage's output directory")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise KoloraError(f"LoRA file {path} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise KoloraError(f"LoRA file {path} has no kolora metadata (format={metadata.get('format')!r}); rank and alpha unknown")
    return LoRAFile(tensors=tensors, rank=int(metadata["rank"]), alpha=float(metadata["alpha"]), metadata=metadata)


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
        down, up = lora.tensors[module_name + _A], lora.tensors[module_name + _B]
        if down.shape[1] != linear.in_features or up.shape[0] != linear.out_features:
            raise KoloraError(
                f"LoRA module '{module_name}' has shape {tuple(up.shape)}x{tuple(down.shape)}, "
                f"the UNet layer is {linear.out_features}x{linear.in_features}: wrong base model"
            )
        delta = (up.to(torch.float32) @ down.to(torch.float32)) * factor
        linear.weight += delta.to(device=linear.weight.device, dtype=linear.weight.dtype)
    return len(lora.modules())
