"""A nested training state <-> one safetensors file, without pickle: tensors as tensors, the rest as JSON.

On Argo a checkpoint comes back from the bucket, so whoever can write there chooses its bytes; unpickling
it (`torch.load(weights_only=False)`) would run their code in the train pod. safetensors holds only named
tensors and a string map, and JSON only data, so loading can build nothing but tensors, numbers, strings,
lists and dicts. The state's structure (dicts with int keys, tuples, numpy arrays: what optimizers and
RNGs hand back) is kept exactly by a small allow-list of tagged JSON objects, listed in `_TAGS`; anything
else a file holds is refused as a `ValueError`, so the caller can skip the file like a torn one.

One file keeps the write atomic (temp name + rename) and the read self-contained: `__metadata__`'s one key
`kolora_state` is the JSON, whose `{"__tensor__": name}` leaves name the file's tensors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

STATE_KEY = "kolora_state"
_TENSOR, _TUPLE, _ITEMS, _NDARRAY = "__tensor__", "__tuple__", "__items__", "__ndarray__"
_TAGS = (_TENSOR, _TUPLE, _ITEMS, _NDARRAY)
_NUMPY_KINDS = "biuf"  # bool, signed, unsigned, float: what an RNG state holds; never object arrays


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = path if path not in tensors else f"{path}#{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {_TENSOR: name}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMPY_KINDS:
            raise TypeError(f"{path}: numpy dtype {value.dtype} is not stored")
        return {_NDARRAY: value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {_ITEMS: [[_encode(k, path, {}), _encode(v, f"{path}/{k}", tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path}: {type(value).__name__} is not stored in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {k: _decode(v, tensors) for k, v in value.items()}
    tag = tags[0]
    if len(tags) > 1 or tag not in _TAGS:
        raise ValueError(f"unknown entry {sorted(tags)} in the state")
    body = value[tag]
    if tag == _TENSOR:
        if body not in tensors:
            raise ValueError(f"the state names a tensor {body!r} the file does not hold")
        return tensors[body]
    if tag == _NDARRAY:
        dtype = np.dtype(str(value.get("dtype")))
        if dtype.kind not in _NUMPY_KINDS:
            raise ValueError(f"numpy dtype {dtype} is not allowed")
        return np.asarray(body, dtype=dtype)
    if not isinstance(body, list):
        raise ValueError(f"{tag} must hold a list")
    if tag == _TUPLE:
        return tuple(_decode(v, tensors) for v in body)
    return {_decode(k, tensors): _decode(v, tensors) for k, v in body}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` (the caller renames it into place); flushed to disk before returning."""
    tensors: dict[str, torch.Tensor] = {}
    document = json.dumps(_encode(state, "", tensors), allow_nan=True, separators=(",", ":"))
    save_file(tensors, str(path), metadata={STATE_KEY: document})
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def load_state(path: Path) -> dict[str, Any]:
    """The state `save_state` wrote; any other file raises (safetensors' error, ValueError, KeyError)."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        if STATE_KEY not in metadata:
            raise ValueError(f"no {STATE_KEY} in the file's metadata: not a kolora checkpoint")
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    state = _decode(json.loads(metadata[STATE_KEY]), tensors)
    if not isinstance(state, dict):
        raise ValueError("the state is not a JSON object")
    return state
