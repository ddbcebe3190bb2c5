"""The LoRA file kolora writes and reads (`lora.safetensors`): the one owner of that format.

Format: safetensors with diffsynth/peft keys (`<module path>.lora_A.default.weight`, `.lora_B...`),
the form the seed's `load_state_dict` expects, plus string metadata (rank, alpha, targets, base model
and dataset fingerprints, the run config). peft scales the update by alpha/rank during training, so
inference must merge `W += strength * (alpha/rank) * B @ A`; the seed merged half of that (alpha 2 vs
4), and `ModelManager.load_lora` forgets the /rank entirely: `LoRAFile.scale` is that factor, and
`merge.merge_lora` is the only merge path.

Every safetensors file kolora writes goes through `save_safetensors`, which fixes the header's key order:
safetensors 0.8 serialises `__metadata__` from a Rust HashMap, whose order changes from one write to the
next, so two identical trainings gave files with different sha256 (`header.py` reads headers without torch).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from kolora_core.errors import KoloraError
from kolora_core.lora.header import HEADER_ALIGNMENT, read_header

LORA_FILE = "lora.safetensors"
FORMAT = "kolora-lora-v1"
A_SUFFIX, B_SUFFIX = ".lora_A.default.weight", ".lora_B.default.weight"  # peft's key form, as diffsynth saves it


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
        return sorted(k.removesuffix(A_SUFFIX) for k in self.tensors if k.endswith(A_SUFFIX))

    def pair(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(down = lora_A, up = lora_B) of one module, as stored."""
        return self.tensors[module + A_SUFFIX], self.tensors[module + B_SUFFIX]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lora_state_from_model(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable LoRA tensors of a peft-injected model, in fp32, detached and contiguous."""
    return {
        name: param.detach().to(torch.float32).contiguous().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad and ".lora_" in name
    }


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors' own serialisation with the header re-written in one fixed order (sorted metadata keys).

    The tensor data and the tensors' entries (safetensors orders them by alignment and name, stably) are kept
    as written; only the JSON header is re-serialised, sorted and compact, and padded as safetensors pads it.
    """
    raw = save(tensors, metadata=metadata)
    header, start = read_header(raw, "safetensors' own output")
    written = header.pop("__metadata__", None)
    entries = {} if written is None else {"__metadata__": dict(sorted(written.items()))}
    entries |= header  # tensors in safetensors' own (deterministic) order
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + raw[start:]


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically (temp + rename), byte-identical for identical tensors and metadata."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(safetensors_bytes(tensors, metadata))
    tmp.chmod(0o644)
    tmp.replace(path)


def save_lora(path: Path, tensors: dict[str, torch.Tensor], rank: int, alpha: float, extra: dict[str, object]) -> None:
    """Write atomically (temp + rename): a LoRA file is either whole or absent, and the same LoRA gives the same bytes."""
    if not tensors:
        raise KoloraError("no LoRA parameters were trained: check train.lora_target_modules against the UNet's module names")
    metadata = {"format": FORMAT, "rank": str(rank), "alpha": repr(float(alpha))}
    metadata |= {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True) for k, v in extra.items()}
    save_safetensors(path, tensors, metadata)


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
