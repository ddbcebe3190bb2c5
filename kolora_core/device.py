"""Device and dtype choice shared by training and generation."""

from __future__ import annotations

import torch

from kolora_core.errors import KoloraError


def resolve_device(requested: str) -> str:
    """`auto` picks CUDA when present; asking for CUDA on a machine without it is an error, not a fallback."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise KoloraError("device is 'cuda' but no CUDA GPU is visible: set device: cpu (or auto) or run on a GPU node")
    return requested


def weights_dtype(device: str) -> torch.dtype:
    """fp16 weights on GPU as the seed does; fp32 on CPU, where fp16 kernels are slow or missing."""
    return torch.float16 if device == "cuda" else torch.float32
