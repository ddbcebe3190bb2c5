"""Which fused attention kernel PyTorch's `scaled_dot_product_attention` runs for the Kolors UNet.

diffsynth's `Attention` calls SDPA with 64-wide heads. PyTorch's default priority picks FlashAttention-2 first,
which on Hopper runs these heads at a fraction of the tensor cores' rate; cuDNN's fused attention (cuDNN 9) is
written for Hopper. `sdpa_context` puts a backend first for everything inside it (forward, and the backward the
autograd graph records); torch.compile traces the choice made inside the context, so compiled code keeps it.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

SDPA_ENV = "KOLORA_SDPA"  # cudnn | flash | default: which backend goes first (benchmarks compare them)


def preferred_backend(device: torch.device | str) -> str:
    choice = os.environ.get(SDPA_ENV, "auto")
    if choice != "auto":
        return choice
    is_hopper = torch.device(device).type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9
    return "cudnn" if is_hopper else "default"


def sdpa_context(device: torch.device | str) -> AbstractContextManager:
    """SDPA with the preferred backend first (the others stay allowed, in PyTorch's order, as fallbacks)."""
    choice = preferred_backend(device)
    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    first = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[choice]
    rest = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel([first, *[b for b in rest if b != first]], set_priority=True)
