"""The LoRA file kolora writes and reads (`lora.safetensors`): the one owner of that format.

Format: safetensors with diffsynth/peft keys (`<module path>.lora_A.default.weight`, `.lora_B...`),
the form the seed's `load_state_dict` expects, plus string metadata (rank, alpha, targets, base model
and dataset fingerprints, the run config, and `variant` for adapters other than LoRA:
DoRA's `lora_magnitude_vector`, LoHa's `hada_w*`, LoKr's `lokr_w*` tensors under the same peft key form).
peft scales the update by alpha/rank during training, so inference must merge
`W += strength * (alpha/rank) * B @ A`; the seed merged half of that (alpha 2 vs 4), and
`ModelManager.load_lora` forgets the /rank entirely: `LoRAFile.scale` is that factor, and
`merge.merge_lora` is the only merge path.

Every safetensors file kolora writes goes through `save_safetensors`, which fixes the header's key order:
safetensors 0.8 serialises `__metadata__` from a Rust HashMap, whose order changes from one write to the
next, so two identical trainings gave files with different sha256 (`header.py` reads headers without torch).
"""

from __future__ import annotations

import hashlib
import json
import math
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
# peft's trainable tensors per variant (metadata "variant"; absent = lora): <module>.<name>.default[.weight]
VARIANT_TENSORS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_A", "lora_B"),
    "dora": ("lora_A", "lora_B", "lora_magnitude_vector"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
}
_ADAPTER_TOKENS = (".lora_", ".hada_", ".lokr_")


def is_adapter_param(name: str) -> bool:
    """Is this parameter (or state-dict key) a peft adapter tensor of any variant (LoRA, DoRA, LoHa, LoKr)?"""
    return any(token in name for token in _ADAPTER_TOKENS)


def split_key(key: str) -> tuple[str, str]:
    """`blocks.5...to_q.hada_w1_a.default` -> (module path, tensor name "hada_w1_a")."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        if any(part in names for names in VARIANT_TENSORS.values()):
            return ".".join(parts[:i]), part
    raise KoloraError(f"LoRA key {key!r} names no adapter tensor ({', '.join(sorted(set(sum(VARIANT_TENSORS.values(), ()))))})")


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

    @property
    def variant(self) -> str:
        return self.metadata.get("variant", "lora")

    def modules(self) -> list[str]:
        return sorted({split_key(k)[0] for k in self.tensors})

    def parts(self, module: str) -> dict[str, torch.Tensor]:
        """The adapter tensors of one module by peft name ("lora_A", "hada_w1_a", "lora_magnitude_vector", ...)."""
        return {split_key(k)[1]: v for k, v in self.tensors.items() if split_key(k)[0] == module}

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
        if param.requires_grad and is_adapter_param(name)
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
        raise KoloraError(
            f"LoRA file {path} has no kolora metadata (format={metadata.get('format')!r}), so its rank and alpha are "
            "unknown: pass the lora.safetensors a kolora train stage wrote"
        )
    if metadata.get("variant", "lora") not in VARIANT_TENSORS:
        raise KoloraError(f"LoRA file {path} is a {metadata['variant']!r} adapter, which this kolora does not know")
    lora = LoRAFile(tensors=tensors, rank=_rank(path, metadata), alpha=_alpha(path, metadata), metadata=metadata)
    _check_tensors(path, lora)
    return lora


_NOT_KOLORAS = "pass the lora.safetensors a kolora train stage wrote"


def _rank(path: Path, metadata: dict[str, str]) -> int:
    rank = metadata.get("rank", "")
    if not rank.isdigit() or int(rank) < 1:
        raise KoloraError(f"LoRA file {path}: metadata 'rank' is {rank or None!r}, not a whole number above 0: {_NOT_KOLORAS}")
    return int(rank)


def _alpha(path: Path, metadata: dict[str, str]) -> float:
    try:
        alpha = float(metadata.get("alpha", ""))
    except ValueError:
        alpha = math.nan
    if not math.isfinite(alpha):
        raise KoloraError(f"LoRA file {path}: metadata 'alpha' is {metadata.get('alpha')!r}, not a finite number: {_NOT_KOLORAS}")
    return alpha


# The factors of each variant's update (`merge.delta_weight`): per factor, the ways it is stored, a tensor whole or a
# product left @ right (LoKr keeps either). Checked when the file is read, so a damaged file is named before any
# model loads, not found by a KeyError or a matmul's shape error mid-merge.
_FACTORS: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "lora": ((("lora_B", "lora_A"),),),
    "dora": ((("lora_B", "lora_A"),),),
    "loha": ((("hada_w1_a", "hada_w1_b"),), (("hada_w2_a", "hada_w2_b"),)),
    "lokr": ((("lokr_w1",), ("lokr_w1_a", "lokr_w1_b")), (("lokr_w2",), ("lokr_w2_a", "lokr_w2_b"))),
}


def _check_tensors(path: Path, lora: LoRAFile) -> None:
    """Refuse what no merge can apply: foreign keys, non-float or non-finite values, missing or misfitting tensors."""
    for key, tensor in lora.tensors.items():
        try:
            split_key(key)
        except KoloraError as exc:
            raise KoloraError(f"LoRA file {path}: {exc}: {_NOT_KOLORAS}") from None
        if not tensor.is_floating_point():
            raise KoloraError(f"LoRA file {path}: tensor {key} is {tensor.dtype}, not floating point: {_NOT_KOLORAS}")
        if not torch.isfinite(tensor).all():
            raise KoloraError(
                f"LoRA file {path}: tensor {key} holds NaN or infinite values (a diverged training?): {_NOT_KOLORAS}"
            )
    for module in lora.modules():
        parts = lora.parts(module)
        shapes = [_factor_shape(path, module, parts, ways) for ways in _FACTORS[lora.variant]]
        if lora.variant == "loha" and shapes[0] != shapes[1]:
            raise KoloraError(f"LoRA file {path}: module {module}'s two Hadamard factors are {shapes[0]} and {shapes[1]}")
        magnitude = parts.get("lora_magnitude_vector")
        if lora.variant == "dora" and (magnitude is None or tuple(magnitude.shape) != shapes[0][:1]):
            got = "missing" if magnitude is None else tuple(magnitude.shape)
            raise KoloraError(f"LoRA file {path}: module {module}'s lora_magnitude_vector is {got}, expected {shapes[0][:1]}")


def _factor_shape(path: Path, module: str, parts: dict[str, torch.Tensor], ways: tuple[tuple[str, ...], ...]) -> tuple[int, ...]:
    """The shape of one factor of `module`'s update, stored in the first of `ways` whose tensors are all there."""
    names = next((names for names in ways if all(name in parts for name in names)), None)
    if names is None:
        wanted = " or ".join("+".join(names) for names in ways)
        raise KoloraError(
            f"LoRA file {path}: module {module} lacks its {wanted} tensor(s): the file is incomplete; {_NOT_KOLORAS}"
        )
    factors = [parts[name] for name in names]
    if any(factor.dim() != 2 for factor in factors) or (len(factors) == 2 and factors[0].shape[1] != factors[1].shape[0]):
        shown = ", ".join(f"{name} {tuple(parts[name].shape)}" for name in names)
        raise KoloraError(f"LoRA file {path}: module {module}'s tensors do not fit together ({shown}): {_NOT_KOLORAS}")
    return (factors[0].shape[0], factors[-1].shape[1])
