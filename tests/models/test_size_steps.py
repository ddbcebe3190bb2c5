"""The config's size steps and LoRA target names are the models' real ones: diffsynth's full-size Kolors UNet run (on
the meta device, shapes only) at the sizes the config accepts and refuses, the pipeline's rounding that generate sizes
avoid, and the UNet's Linear layer names that train.lora_target_modules takes."""

from __future__ import annotations

import pytest
import torch
from diffsynth import SDXLImagePipeline
from diffsynth.models.sdxl_unet import SDXLUNet

from kolora_core.config import load_config
from kolora_core.config.schema import PIPELINE_SIZE_STEP, UNET_LINEAR_NAMES, UNET_SIZE_STEP, unet_linear_modules
from kolora_core.errors import KoloraError


@pytest.fixture(scope="module")
def kolors_unet() -> SDXLUNet:
    with torch.device("meta"):
        return SDXLUNet(is_kolors=True)  # 2.6 B parameters, no memory: meta tensors carry shapes only


def unet_runs(unet: SDXLUNet, pixels: int) -> bool:
    latent = pixels // 8
    meta = {"device": "meta"}
    try:
        unet(
            torch.zeros(1, 4, latent, latent, **meta),
            torch.zeros(1, **meta),
            torch.zeros(1, 256, 4096, **meta),
            add_time_id=torch.zeros(1, 6, **meta),
            add_text_embeds=torch.zeros(1, 4096, **meta),
        )
    except RuntimeError:
        return False
    return True


def config_accepts(pixels: int) -> bool:
    try:
        load_config("full", overrides={"train.resolution": pixels})
    except KoloraError:
        return False
    return True


@pytest.mark.parametrize("pixels", [1024, 1000, 992, 1008, 976, 960, 544, 520])
def test_train_resolution_is_accepted_exactly_when_the_kolors_unet_runs(kolors_unet: SDXLUNet, pixels: int) -> None:
    assert config_accepts(pixels) == unet_runs(kolors_unet, pixels)
    assert UNET_SIZE_STEP == 32


def test_generate_sizes_are_what_the_pipeline_renders() -> None:
    """SDXLImagePipeline rounds up to its division factor: 1000 would render 1024 without an error."""
    pipe = SDXLImagePipeline(device="cpu")
    assert (pipe.height_division_factor, pipe.width_division_factor) == (PIPELINE_SIZE_STEP, PIPELINE_SIZE_STEP)
    assert PIPELINE_SIZE_STEP % UNET_SIZE_STEP == 0  # every size generate accepts, the UNet runs
    assert pipe.check_resize_height_width(1000, 1024) == (1024, 1024)
    with pytest.raises(KoloraError, match=r"generate\.width.*multiple of 64"):
        load_config("full", overrides={"generate.width": 1000})


def test_lora_target_names_are_the_kolors_unets_linear_layers(kolors_unet: SDXLUNet) -> None:
    """UNET_LINEAR_NAMES: the last name parts that only Linear layers have (peft matches a target as the last parts of
    a module's name: a part shared with another kind of module, or a block number, would reach one it cannot adapt);
    unet_linear_modules(): the full names of the Linear layers they end, whose last parts are the dotted targets."""
    kinds: dict[str, set[type]] = {}
    for name, module in kolors_unet.named_modules():
        kinds.setdefault(name.rsplit(".", 1)[-1], set()).add(type(module))
    assert set(UNET_LINEAR_NAMES) == {leaf for leaf, found in kinds.items() if found == {torch.nn.Linear} and not leaf.isdigit()}
    linear = [name for name, module in kolors_unet.named_modules() if isinstance(module, torch.nn.Linear)]
    assert sorted(unet_linear_modules()) == sorted(name for name in linear if name.rsplit(".", 1)[-1] in UNET_LINEAR_NAMES)
