"""The full-size exports as their consumers load them: diffusers' own loaders and ComfyUI's key mapping.

The Kolors UNet is built twice on the meta device: diffsynth's `SDXLUNet(is_kolors=True)` (what kolora trains)
and diffusers' `UNet2DConditionModel` with Kolors' config. A LoRA with different random tensors on each of the
560 layers is exported by kolora, loaded by the consumer, and every loaded layer's update is compared with the
update kolora trained *for the module that layer is*. Which diffsynth module a diffusers layer is comes from
diffsynth's own `from_diffusers` converter, never from kolora's naming code, so a swap of same-shaped blocks
(`down_blocks.2.attentions.0` <-> `1`, i.e. `input_blocks_7_1` <-> `8_1`) fails: the test plants one.

Updates are compared on a random probe (`delta @ probe`), which equals comparing the matrices with probability
one and costs a rank-sized product instead of 900 M multiply-adds per loader. peft moves loaded adapters to the
base layer's device (meta here); the tests keep them on the CPU so their values can be read, and touch nothing
of the loaders' naming or scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import diffusers
import pytest
import torch
from safetensors.torch import load_file

from kolora_core.lora import export
from kolora_core.lora.export import DIFFUSERS_FILE, KOHYA_FILE, BlockName, unet_layout, write_exports
from kolora_core.lora.format import A_SUFFIX, B_SUFFIX, LoRAFile
from tests.lora import comfyui_keys
from tests.lora.kolors_diffusers import kolors_pipeline, meta_diffusers_unet

RANK, ALPHA = 4, 2.0
Delta = Callable[[torch.Tensor], torch.Tensor]  # probe (in, k) -> update @ probe (out, k)


@pytest.fixture(scope="module")
def diffsynth_unet() -> torch.nn.Module:
    from diffsynth.models.sdxl_unet import SDXLUNet

    with torch.device("meta"):
        return SDXLUNet(is_kolors=True)


@pytest.fixture(scope="module")
def to_diffsynth(diffsynth_unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module -> diffsynth module, by diffsynth's own converter (values are the names themselves)."""
    names = [n for n, _ in meta_diffusers_unet().named_parameters() if ".proj_in." not in n and ".proj_out." not in n]
    renamed, _ = diffsynth_unet.state_dict_converter().from_diffusers({n: n for n in names})
    return {d.removesuffix(".weight"): s.removesuffix(".weight") for s, d in renamed.items() if d.endswith(".weight")}


@pytest.fixture(scope="module")
def lora(diffsynth_unet: torch.nn.Module) -> LoRAFile:
    """Different random factors on each of the 560 LoRA targets, so no two layers' updates are alike."""
    g = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in diffsynth_unet.named_modules():
        if name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "to_out"):
            tensors[name + A_SUFFIX] = torch.randn(RANK, module.in_features, generator=g)
            tensors[name + B_SUFFIX] = torch.randn(module.out_features, RANK, generator=g)
    return LoRAFile(tensors=tensors, rank=RANK, alpha=ALPHA, metadata={})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, lora: LoRAFile, diffsynth_unet: torch.nn.Module) -> Path:
    out = tmp_path_factory.mktemp("full-export")
    write_exports(out, lora, unet_layout(diffsynth_unet), output_name="kolora")
    return out


def assert_same_updates(loaded: dict[str, Delta], to_diffsynth: dict[str, str], lora: LoRAFile) -> None:
    """Each loaded layer (by diffusers name) applies exactly kolora's trained update of that same module."""
    assert len(loaded) == 560, f"{len(loaded)} layers loaded, the Kolors UNet has 560 LoRA targets"
    assert sorted(to_diffsynth[name] for name in loaded) == lora.modules()
    for name, delta in loaded.items():
        down, up = lora.pair(to_diffsynth[name])
        probe = torch.randn(down.shape[1], 2, generator=torch.Generator().manual_seed(down.shape[1]))
        expected = up @ (down @ probe) * lora.scale
        torch.testing.assert_close(delta(probe), expected, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@contextmanager
def adapters_stay_on_cpu() -> Iterator[None]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    original = BaseTunerLayer._move_adapter_to_device_of_base_layer
    BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, *a, **k: None
    try:
        yield
    finally:
        BaseTunerLayer._move_adapter_to_device_of_base_layer = original


def peft_updates(unet: torch.nn.Module) -> dict[str, Delta]:
    """The update each peft LoRA layer adds: B(A(x)) * scaling, as its forward computes it."""
    from peft.tuners.lora import LoraLayer

    def update(layer: LoraLayer) -> Delta:
        (adapter,) = layer.lora_A.keys()
        a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
        return lambda probe: b @ (a @ probe) * layer.scaling[adapter]

    return {name: update(m) for name, m in unet.named_modules() if isinstance(m, LoraLayer)}


def _pipeline_load_lora_weights(path: Path, unet: torch.nn.Module) -> None:
    kolors_pipeline(unet).load_lora_weights(str(path), low_cpu_mem_usage=True)


def _lora_state_dict_then_load_lora_adapter(path: Path, unet: torch.nn.Module) -> None:
    state, alphas = diffusers.KolorsPipeline.lora_state_dict(str(path))
    assert alphas is None, "the diffusers form carries no alphas: the scale is baked into lora_B"
    unet.load_lora_adapter(state, prefix="unet", low_cpu_mem_usage=True)


def _unet_load_lora_adapter(path: Path, unet: torch.nn.Module) -> None:
    unet.load_lora_adapter(load_file(str(path)), prefix="unet", low_cpu_mem_usage=True)


def _kohya_pipeline_load_lora_weights(path: Path, unet: torch.nn.Module) -> None:
    """The call docs/training.md gives: KolorsPipeline's loader needs the UNet config to map SGM block numbers."""
    pipe = kolors_pipeline(unet)
    pipe.load_lora_weights(str(path), unet_config=pipe.unet.config, low_cpu_mem_usage=True)


def _kohya_sdxl_lora_state_dict(path: Path, unet: torch.nn.Module) -> None:
    state, alphas = diffusers.StableDiffusionXLPipeline.lora_state_dict(str(path), unet_config=unet.config)
    diffusers.StableDiffusionXLPipeline.load_lora_into_unet(state, alphas, unet=unet, low_cpu_mem_usage=True)


LOADERS = {
    DIFFUSERS_FILE: [_pipeline_load_lora_weights, _lora_state_dict_then_load_lora_adapter, _unet_load_lora_adapter],
    KOHYA_FILE: [_kohya_pipeline_load_lora_weights, _kohya_sdxl_lora_state_dict],
}
CASES = [(file, loader) for file, loaders in LOADERS.items() for loader in loaders]


def diffusers_loaded(path: Path, loader: Callable[[Path, torch.nn.Module], None]) -> dict[str, Delta]:
    unet = meta_diffusers_unet()
    with adapters_stay_on_cpu():
        loader(path, unet)
    return peft_updates(unet)


def comfyui_loaded(path: Path) -> tuple[dict[str, Delta], comfyui_keys.ComfyLoad]:
    """ComfyUI's load of the kohya file, keyed back to diffusers names through ComfyUI's own SGM map."""
    diffusers_to_sgm = comfyui_keys.unet_to_diffusers_attention(comfyui_keys.KOLORS_COMFY_UNET)
    comfy = comfyui_keys.load_lora(load_file(str(path)), comfyui_keys.model_lora_keys_unet(diffusers_to_sgm))
    by_weight = {f"diffusion_model.{sgm}.weight": d for d, sgm in diffusers_to_sgm.items()}

    def update(key: str) -> Delta:
        return lambda probe: comfy.update(key, probe)

    return {by_weight[key]: update(key) for key in comfy.patches}, comfy


def test_kolors_config_is_the_diffsynth_unet(diffsynth_unet: torch.nn.Module) -> None:
    """diffusers' UNet from KOLORS_UNET, renamed by diffsynth's converter, has diffsynth's parameters, shape for shape."""
    params = dict(meta_diffusers_unet().named_parameters())
    renamed, extra = diffsynth_unet.state_dict_converter().from_diffusers(params)
    assert extra == {"is_kolors": True}
    expected = {name: tuple(p.shape) for name, p in diffsynth_unet.named_parameters()}
    assert {name: tuple(p.shape) for name, p in renamed.items()} == expected


@pytest.mark.parametrize(("file", "loader"), CASES, ids=[f"{f}-{loader.__name__.strip('_')}" for f, loader in CASES])
def test_diffusers_loaders_apply_every_layer_to_its_own_module(
    exported: Path, to_diffsynth: dict[str, str], lora: LoRAFile, file: str, loader: Callable[[Path, torch.nn.Module], None]
) -> None:
    assert_same_updates(diffusers_loaded(exported / file, loader), to_diffsynth, lora)


def test_kolors_pipeline_plain_call_rejects_the_kohya_file(exported: Path) -> None:
    """Why docs/training.md gives `unet_config=`: without it KolorsPipeline leaves SGM names unmapped (diffusers 0.36)."""
    from peft import NoMatchingPeftModuleError

    with pytest.raises(NoMatchingPeftModuleError):
        kolors_pipeline(meta_diffusers_unet()).load_lora_weights(str(exported / KOHYA_FILE), low_cpu_mem_usage=True)


def test_comfyui_maps_every_kohya_key_and_leaves_none(exported: Path, to_diffsynth: dict[str, str], lora: LoRAFile) -> None:
    loaded, comfy = comfyui_loaded(exported / KOHYA_FILE)
    assert comfy.not_loaded == [], f"ComfyUI would log 'lora key not loaded' for {comfy.not_loaded[:3]}"
    assert {alpha for _, _, alpha in comfy.patches.values()} == {ALPHA}
    assert_same_updates(loaded, to_diffsynth, lora)


def test_a_planted_swap_of_same_shaped_blocks_fails_every_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: LoRAFile, diffsynth_unet: torch.nn.Module, to_diffsynth: dict[str, str]
) -> None:
    """A naming bug swapping down_blocks.2.attentions.0 and 1 (SGM: input_blocks_7_1 and 8_1, same shapes) loads
    without error everywhere; only the per-layer updates tell, and every check must name the swapped block."""
    real, swap = export.diffusers_block_names, ("down_blocks.2.attentions.0", "down_blocks.2.attentions.1")

    def swapped(layout: list[str]) -> dict[int, BlockName]:
        names = real(layout)
        (i,) = (k for k, v in names.items() if v.diffusers == swap[0])
        (j,) = (k for k, v in names.items() if v.diffusers == swap[1])
        assert (names[i].sgm, names[j].sgm) == ("input_blocks.7.1", "input_blocks.8.1")
        names[i], names[j] = names[j], names[i]
        return names

    monkeypatch.setattr(export, "diffusers_block_names", swapped)
    write_exports(tmp_path, lora, unet_layout(diffsynth_unet), output_name="kolora")
    checks = [lambda: comfyui_loaded(tmp_path / KOHYA_FILE)[0]]
    checks += [lambda f=f, loader=loader: diffusers_loaded(tmp_path / f, loader) for f, loader in CASES]
    for loaded in checks:
        with pytest.raises(AssertionError, match=r"^down_blocks\.2\.attentions\.[01]\."):
            assert_same_updates(loaded(), to_diffsynth, lora)
