"""Write a safetensors file one tensor at a time, so a 5 GB weight file never sits in memory whole.

`safetensors.torch.save_file` takes every tensor at once; the random full-size Kolors weights
(`kolora_core.models.random_kolors`) are made tensor by tensor instead. The format is small and fixed
(safetensors' README): an 8-byte little-endian header length, a JSON header mapping each name to its dtype,
shape and `[begin, end)` byte offsets into the data that follows (plus `__metadata__`, string to string),
padded with spaces to a multiple of 8 bytes, then the raw little-endian bytes in offset order. The header
is known before any data exists (dtypes and shapes come from the model's skeleton), so it is written first
and each tensor's bytes are appended as it is made. `safe_open` / `load_file` read the result like any other.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

# safetensors' dtype names (safetensors/src/tensor.rs Dtype)
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32"}


def safetensors_header(
    specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None
) -> bytes:
    """The length-prefixed, 8-byte aligned header for tensors stored in the order of `specs`."""
    header: dict[str, object] = {"__metadata__": dict(sorted((metadata or {}).items()))} if metadata else {}
    offset = 0
    for name, dtype, shape in specs:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(
    path: Path,
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `tensors` (name, tensor), which must arrive in the order and with the dtypes and shapes of `specs`."""
    expected = iter(specs)
    with path.open("wb") as handle:
        handle.write(safetensors_header(specs, metadata))
        for name, tensor in tensors:
            spec = next(expected, None)
            if spec is None or spec != (name, tensor.dtype, tuple(tensor.shape)):
                raise ValueError(f"{path.name}: got {name} {tensor.dtype} {tuple(tensor.shape)}, the header says {spec}")
            handle.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        missing = next(expected, None)
        if missing is not None:
            raise ValueError(f"{path.name}: the header lists {missing[0]} but no such tensor was written")
