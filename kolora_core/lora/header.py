"""safetensors headers read without torch: a file's metadata and its content hash, for the release and publishing.

`content_sha256` names a safetensors file by what it holds (metadata, and per tensor its name, dtype,
shape and bytes, canonically ordered), whatever order its header was written in: the release identity.
Light on purpose: `kolora publish` and `kolora champion` import the release code and load no ML framework.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError

HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


def read_header(data: bytes | memoryview, source: object) -> tuple[dict[str, Any], int]:
    """(header JSON, offset of the tensor data) of safetensors bytes."""
    if len(data) < 8:
        raise KoloraError(f"{source} is not a safetensors file (shorter than its header length)")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if 8 + length > len(data):
        raise KoloraError(f"{source} is not a safetensors file (header length {length} runs past the end)")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except ValueError:
        raise KoloraError(f"{source} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise KoloraError(f"{source} is not a safetensors file (its header is not a JSON object)")
    return header, 8 + length


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file (empty when it has none)."""
    with path.open("rb") as handle:
        head = handle.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        header, _ = read_header(head + handle.read(length), path)
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def content_sha256(path: Path) -> str:
    """sha256 of what a safetensors file holds, independent of header order and padding.

    Canonical form: the metadata (sorted), then per tensor in name order its name, dtype, shape and the
    sha256 of its bytes. Two files with equal content hashes load to equal tensors and metadata.
    """
    data = memoryview(path.read_bytes())
    header, start = read_header(data, path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise KoloraError(f"{path}: its __metadata__ is not a JSON object")
    tensors = []
    for name in sorted(header):
        info = header[name]
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            dtype, shape = str(info["dtype"]), [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError):
            raise KoloraError(f"{path}: tensor {name!r} has no valid dtype/shape/data_offsets in the header") from None
        if not 0 <= begin <= end <= len(data) - start:
            raise KoloraError(f"{path}: tensor {name!r} lies outside the file")
        tensors.append([name, dtype, shape, hashlib.sha256(data[start + begin : start + end]).hexdigest()])
    canonical = {"metadata": dict(sorted(metadata.items())), "tensors": tensors}
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()
