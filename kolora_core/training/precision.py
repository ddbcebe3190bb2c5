"""Every numeric-precision choice of kolora in one place: weight dtypes, autocast, and the "32" alias.

`train.precision` takes Lightning's names (`16-mixed`, `bf16-mixed`, `32-true`) plus `32`, which the seed's
`train_kolors_lora.py` command line uses for full precision and which means `32-true`. What follows from it:

* the seed engine keeps frozen weights in fp16 under mixed precision and fp32 otherwise, as the seed does;
* the fast engine keeps them in the autocast dtype (fp16, or bf16 for bf16-mixed: an option the seed never had);
* mixed precision autocasts to fp16/bf16: `autocast_for()` in the training step (no weight-cast cache, so a CUDA
  graph never replays a stale cast; with the attention backend of `kolora_core.models.attention`), `autocast()` outside it.

Generation follows the seed: fp16 weights on GPU, fp32 on CPU (where fp16 kernels are slow or missing), and a
VAE decode in bf16 on GPU / fp32 on CPU unless `generate.vae_dtype` says otherwise (both have fp32's exponent
range, so the decode never overflows to NaN). The training side owns this module because the LoRA's precision
is decided there; generation only reads these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

from kolora_core.config import GenerateConfig
from kolora_core.models.attention import sdpa_context

FULL_PRECISION = ("32", "32-true")


def fabric_precision(precision: str) -> str:
    """The name Lightning accepts: `32` is the seed's spelling of `32-true`."""
    return "32-true" if precision == "32" else precision


def is_full_precision(precision: str) -> bool:
    return precision in FULL_PRECISION


def seed_weights_dtype(precision: str) -> torch.dtype:
    """As train_kolors_lora.py: frozen weights in fp32 only for full-precision runs, else fp16."""
    return torch.float32 if is_full_precision(precision) else torch.float16


def fast_weights_dtype(precision: str) -> torch.dtype:
    """Frozen weights in the autocast dtype: fp16 for 16-mixed (the seed), bf16 for bf16-mixed."""
    return {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision, torch.float32)


def autocast(precision: str, device: str) -> Any:
    """The autocast context of a mixed precision outside Fabric's loop (a no-op at full precision)."""
    if precision in ("16-mixed", "bf16-mixed"):
        return torch.autocast(device, dtype=torch.float16 if precision == "16-mixed" else torch.bfloat16)
    return contextlib.nullcontext()


def generation_weights_dtype(device: str) -> torch.dtype:
    """fp16 weights on GPU as the seed does; fp32 on CPU, where fp16 kernels are slow or missing."""
    return torch.float16 if device == "cuda" else torch.float32


def vae_dtype(generate: GenerateConfig, device: str) -> torch.dtype:
    """`generate.vae_dtype`; auto = bf16 on GPU, fp32 on CPU."""
    if generate.vae_dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, generate.vae_dtype)


def autocast_for(precision: str, device: torch.device | str) -> Callable[[], AbstractContextManager]:
    """The training precision's autocast, without the weight-cast cache (see the module docstring), and the
    attention backend (`kolora_core.models.attention`; the forward's choice fixes the backward's kernel too)."""
    device_type = torch.device(device).type
    if precision not in ("16-mixed", "bf16-mixed"):
        return lambda: sdpa_context(device)
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16

    @contextlib.contextmanager
    def both() -> Iterator[None]:
        with torch.autocast(device_type, dtype=dtype, cache_enabled=False), sdpa_context(device):
            yield

    return both
