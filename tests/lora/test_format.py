"""The LoRA file format: the same tensors and metadata give the same bytes; content hashes ignore header order."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from kolora_core.errors import KoloraError
from kolora_core.lora.format import load_lora, save_lora, save_safetensors
from kolora_core.lora.header import content_sha256

TENSORS = {
    f"blocks.{i}.to_q.lora_{ab}.default.weight": torch.full(shape, float(i))
    for i in range(6)
    for ab, shape in (("A", (4, 2)), ("B", (3, 4)))
}
EXTRA = {f"fact_{i}": f"二次元 {i}" for i in range(10)}  # many keys: safetensors' own order would vary between writes


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reordered(source: Path, target: Path) -> None:
    """The same file with its header keys reversed and extra padding: what another writer may produce."""
    data = source.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = dict(reversed(header["__metadata__"].items()))
    text = json.dumps(dict(reversed(header.items())), ensure_ascii=False).encode() + b" " * 16
    text += b" " * (-len(text) % 8)
    target.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])


def test_the_same_lora_is_written_byte_for_byte_the_same(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.safetensors" for i in range(5)]
    for path in paths:
        save_lora(path, TENSORS, rank=4, alpha=2.0, extra=EXTRA)
    assert len({_sha(p) for p in paths}) == 1
    lora = load_lora(paths[0])  # still a safetensors file every reader opens
    assert lora.metadata["fact_3"] == "二次元 3" and torch.equal(
        lora.tensors["blocks.2.to_q.lora_A.default.weight"], TENSORS["blocks.2.to_q.lora_A.default.weight"]
    )
    data = paths[0].read_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


def test_content_hash_is_the_content_not_the_header_order(tmp_path: Path) -> None:
    save_lora(tmp_path / "a.safetensors", TENSORS, rank=4, alpha=2.0, extra=EXTRA)
    _reordered(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert _sha(tmp_path / "a.safetensors") != _sha(tmp_path / "b.safetensors")
    assert content_sha256(tmp_path / "a.safetensors") == content_sha256(tmp_path / "b.safetensors")
    changed_tensor = dict(TENSORS) | {"blocks.0.to_q.lora_A.default.weight": torch.full((4, 2), 1e-7)}
    save_lora(tmp_path / "c.safetensors", changed_tensor, rank=4, alpha=2.0, extra=EXTRA)
    save_lora(tmp_path / "d.safetensors", TENSORS, rank=4, alpha=2.0, extra=EXTRA | {"fact_0": "other"})
    hashes = {content_sha256(tmp_path / f"{n}.safetensors") for n in "acd"}
    assert len(hashes) == 3


def test_content_hash_refuses_what_is_not_safetensors(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(KoloraError, match=r"header length .* runs past the end"):
        content_sha256(tmp_path / "x.safetensors")
    save_safetensors(tmp_path / "y.safetensors", {"t": torch.zeros(3)}, {})
    data = bytearray((tmp_path / "y.safetensors").read_bytes())
    (tmp_path / "y.safetensors").write_bytes(bytes(data[:-4]))  # truncated tensor data
    with pytest.raises(KoloraError, match="tensor 't' lies outside the file"):
        content_sha256(tmp_path / "y.safetensors")


def _damaged(tensors: dict[str, torch.Tensor], **changes: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """`tensors` with module blocks.0's `lora_A`/`lora_B`/... replaced (None: removed)."""
    out = dict(tensors)
    for name, tensor in changes.items():
        key = f"blocks.0.to_q.{name}.default.weight"
        out.pop(key) if tensor is None else out.__setitem__(key, tensor)
    return out


LORA_A = "blocks.0.to_q.lora_A.default.weight"


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        (_damaged(TENSORS, lora_B=None), {}, r"module blocks\.0\.to_q lacks its lora_B\+lora_A tensor\(s\)"),
        (
            _damaged(TENSORS, lora_A=torch.zeros(5, 2)),
            {},
            r"blocks\.0\.to_q's tensors do not fit together \(lora_B \(3, 4\), lora_A \(5, 2\)\)",
        ),
        (_damaged(TENSORS, lora_A=torch.zeros(1, 4, 2)), {}, r"blocks\.0\.to_q's tensors do not fit together"),
        (_damaged(TENSORS, lora_A=torch.full((4, 2), float("nan"))), {}, rf"tensor {LORA_A} holds NaN or infinite values"),
        (_damaged(TENSORS, lora_B=torch.full((3, 4), float("inf"))), {}, r"lora_B\.default\.weight holds NaN or infinite"),
        (
            _damaged(TENSORS, lora_A=torch.ones(4, 2, dtype=torch.int8)),
            {},
            rf"tensor {LORA_A} is torch\.int8, not floating point",
        ),
        (TENSORS | {"foo.weight": torch.zeros(2)}, {}, r"LoRA key 'foo\.weight' names no adapter tensor"),
        (TENSORS, {"rank": "0"}, r"metadata 'rank' is '0', not a whole number above 0"),
        (TENSORS, {"rank": "four"}, r"metadata 'rank' is 'four'"),
        (TENSORS, {"alpha": "nan"}, r"metadata 'alpha' is 'nan', not a finite number"),
        (TENSORS, {"variant": "dora"}, r"blocks\.0\.to_q's lora_magnitude_vector is missing, expected \(3,\)"),
        (TENSORS, {"variant": "loha"}, r"module blocks\.0\.to_q lacks its hada_w1_a\+hada_w1_b tensor\(s\)"),
        (
            {"m.hada_w1_a.default": torch.ones(3, 2), "m.hada_w1_b.default": torch.ones(2, 4)}
            | {"m.hada_w2_a.default": torch.ones(3, 2), "m.hada_w2_b.default": torch.ones(2, 5)},
            {"variant": "loha"},
            r"module m's two Hadamard factors are \(3, 4\) and \(3, 5\)",
        ),
    ],
)
def test_a_lora_no_merge_can_apply_is_refused_when_read(
    tmp_path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], message: str
) -> None:
    """A damaged or foreign file fails with its name and the tensor or field, not a KeyError or a shape error
    mid-merge (exit 1, retried), nor a NaN LoRA that renders black images blamed on the VAE."""
    path = tmp_path / "lora.safetensors"
    save_safetensors(path, tensors, {"format": "kolora-lora-v1", "rank": "4", "alpha": "2.0"} | metadata)
    with pytest.raises(KoloraError, match=message) as caught:
        load_lora(path)
    assert str(caught.value).startswith(f"LoRA file {path}: ")


def test_a_whole_lokr_factor_or_its_low_rank_product_both_read(tmp_path: Path) -> None:
    halves = {
        "m.lokr_w1.default": torch.ones(2, 2),
        "m.lokr_w2_a.default": torch.ones(3, 1),
        "m.lokr_w2_b.default": torch.ones(1, 4),
    }
    save_safetensors(
        tmp_path / "l.safetensors", halves, {"format": "kolora-lora-v1", "rank": "1", "alpha": "1.0", "variant": "lokr"}
    )
    assert load_lora(tmp_path / "l.safetensors").modules() == ["m"]
