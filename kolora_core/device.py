"""Where the torch stages (train, generate, evaluate) run: `device` of the run config, resolved on this machine.

Dtypes are not chosen here: `kolora_core.training.precision` owns every one of them.
"""

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
