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

TENSORS = {f"blocks.{i}.to_q.lora_A.default.weight": torch.full((4, 2), float(i)) for i in range(6)}
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
