"""The precision policy: `32` is the seed's spelling of `32-true` everywhere, and each engine gets the seed's dtypes."""

from __future__ import annotations

import contextlib
import typing

import pytest
import torch

from kolora_core.config import GenerateConfig, TrainConfig
from kolora_core.training.precision import (
    autocast,
    fabric_precision,
    fast_weights_dtype,
    generation_weights_dtype,
    is_full_precision,
    seed_weights_dtype,
    vae_dtype,
)

PRECISIONS = typing.get_args(TrainConfig.model_fields["precision"].annotation)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_32_is_an_alias_of_32_true(precision: str) -> None:
    same = "32-true" if precision == "32" else precision
    assert fabric_precision(precision) == same
    assert seed_weights_dtype(precision) == seed_weights_dtype(same)
    assert fast_weights_dtype(precision) == fast_weights_dtype(same)
    assert is_full_precision(precision) == (same == "32-true")


def test_engine_weight_dtypes() -> None:
    assert seed_weights_dtype("16-mixed") == seed_weights_dtype("bf16-mixed") == torch.float16  # the seed has no bf16
    assert fast_weights_dtype("16-mixed") == torch.float16 and fast_weights_dtype("bf16-mixed") == torch.bfloat16
    assert seed_weights_dtype("32-true") == fast_weights_dtype("32-true") == torch.float32


def test_autocast_only_under_mixed_precision() -> None:
    assert isinstance(autocast("32", "cpu"), contextlib.nullcontext)
    with autocast("bf16-mixed", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_generation_dtypes() -> None:
    assert generation_weights_dtype("cuda") == torch.float16 and generation_weights_dtype("cpu") == torch.float32
    auto = GenerateConfig()
    assert vae_dtype(auto, "cuda") == torch.bfloat16 and vae_dtype(auto, "cpu") == torch.float32
    assert vae_dtype(GenerateConfig(vae_dtype="float16"), "cpu") == torch.float16
