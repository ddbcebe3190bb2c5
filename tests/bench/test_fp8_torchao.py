"""bench/fp8_torchao.py's choice of layers on the real UNet class (the tiny Kolors UNet, LoRA injected as the train
stage does): what docs/benchmarks.md's FP8 rows say was converted is only as right as this selection. torchao itself
is not a dependency here, so the conversion is a stand-in that marks what it is given as torchao's would."""

from __future__ import annotations

import pytest
import torch

from bench.fp8_torchao import Fp8Layers, _wanted, scope_of
from kolora_core.config import TrainConfig
from kolora_core.models.tiny import build_tiny_models
from kolora_core.training.fast_module import inject_lora


class Converted(torch.nn.Linear):
    """Stands for torchao's Float8Linear: a subclass, so `_wanted` no longer picks it."""


def fake_convert(unet: torch.nn.Module, scope: str) -> int:
    chosen = [module for name, module in unet.named_modules() if _wanted(scope, name, module)]
    for module in chosen:
        module.__class__ = Converted
    return len(chosen)


@pytest.fixture
def unet() -> torch.nn.Module:
    return inject_lora(build_tiny_models(0)["sdxl_unet"], TrainConfig())


def converted_names(unet: torch.nn.Module) -> list[str]:
    return [name for name, module in unet.named_modules() if type(module) is Converted]


def test_ff_takes_the_feed_forward_pair_of_every_transformer_layer_and_all_widens_to_the_base_layers(
    unet: torch.nn.Module,
) -> None:
    layers = Fp8Layers(fake_convert)
    layers.widen(unet, "ff")
    ff = converted_names(unet)
    transformer_layers = {name.removesuffix(".act_fn.proj").removesuffix(".ff") for name in ff}
    assert ff and all(name.endswith((".act_fn.proj", ".ff")) for name in ff)
    assert len(ff) == 2 * len(transformer_layers) == layers.layers
    layers.widen(unet, "all")
    everything = converted_names(unet)
    assert layers.scope == "all" and layers.layers == len(everything) == 10 * len(transformer_layers)
    assert not any(".lora_" in name for name in everything), "the LoRA's own layers stay in full precision"
    assert all(name.endswith(".base_layer") for name in everything if ".attn" in name), "peft's base layer, not lora.Linear"
    assert not any(name.endswith(("proj_in", "proj_out", "time_emb_proj")) for name in everything)


@pytest.mark.parametrize(("first", "then"), [("all", "ff"), ("ff", "")])
def test_a_variant_asking_less_after_more_stops_the_bench(unet: torch.nn.Module, first: str, then: str) -> None:
    layers = Fp8Layers(fake_convert)
    layers.widen(unet, first)
    with pytest.raises(SystemExit, match="put the fp8 variants last"):
        layers.widen(unet, then)


def test_flags_name_the_scope() -> None:
    assert [scope_of(flags) for flags in ({"compile"}, {"fp8ff"}, {"fp8", "whole"})] == ["", "ff", "all"]
