"""DoRA, LoHa and LoKr exports: each file that can carry the variant gives peft's trained output back.

DoRA's diffusers file loads through diffusers' own `load_lora_adapter` (it turns `use_dora` on from the
`lora_magnitude_vector` keys); LoHa's and LoKr's kohya/LyCORIS files are read back and merged (ComfyUI, A1111/Forge
and LyCORIS read those keys; none of them is installed here). A format that cannot carry a variant refuses it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import inject_adapter_in_model
from safetensors.torch import load_file

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError
from kolora_core.lora.export import DIFFUSERS_FILE, KOHYA_FILE, read_export, to_kohya, unet_layout, write_exports
from kolora_core.lora.format import is_adapter_param, load_lora, lora_state_from_model, save_lora
from kolora_core.lora.merge import merge_lora
from kolora_core.models.tiny import build_tiny_models
from kolora_core.training.fast_module import adapter_config
from tests.lora.test_export import _diffsynth_out, _diffusers_out, tiny_diffusers_unet


def _trained(variant: str, out: Path, rank: int = 4) -> tuple[torch.Tensor, Path]:
    train = TrainConfig(lora_rank=rank, lora_alpha=3.0, lora_variant=variant)
    unet = inject_adapter_in_model(adapter_config(train), build_tiny_models(seed=0)["sdxl_unet"].eval())
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if is_adapter_param(name):
                param.add_(torch.randn(param.shape, generator=g) * 0.2)
            param.requires_grad_(is_adapter_param(name))
    save_lora(out / "lora.safetensors", lora_state_from_model(unet), rank=rank, alpha=3.0, extra={"variant": variant})
    layout = unet_layout(build_tiny_models(seed=0)["sdxl_unet"])
    write_exports(out, load_lora(out / "lora.safetensors"), layout, formats=train.export_formats, output_name="kolora")
    return _diffsynth_out(unet), out


def test_dora_diffusers_export_loads_in_diffusers_as_trained(tmp_path: Path) -> None:
    expected, out = _trained("dora", tmp_path)
    assert not (out / KOHYA_FILE).exists(), "dora's default exports are the diffusers file alone"
    state = load_file(str(out / DIFFUSERS_FILE))
    assert any(k.endswith(".lora_magnitude_vector") for k in state)
    unet = tiny_diffusers_unet(build_tiny_models(seed=0)["sdxl_unet"].eval())
    without = _diffusers_out(unet)
    unet.load_lora_adapter(state, prefix="unet", adapter_name="kolora")
    assert not torch.allclose(without, expected, atol=1e-3)
    torch.testing.assert_close(_diffusers_out(unet), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("variant", "rank"), [("loha", 4), ("lokr", 4), ("lokr", 2)])
def test_lycoris_kohya_export_merges_to_the_trained_output(variant: str, rank: int, tmp_path: Path) -> None:
    """rank 4 gives LoKr whole factors on the tiny 64-wide layers, rank 2 low-rank ones (`lokr_w2_a/_b`)."""
    expected, out = _trained(variant, tmp_path, rank)
    assert not (out / DIFFUSERS_FILE).exists()
    keys = load_file(str(out / KOHYA_FILE))
    assert all(k.startswith("lora_unet_") for k in keys)
    assert any(f".{'hada' if variant == 'loha' else 'lokr'}_w1" in k for k in keys)
    base = build_tiny_models(seed=0)["sdxl_unet"].eval()
    merge_lora(base, read_export(out / KOHYA_FILE, unet_layout(base)))
    torch.testing.assert_close(_diffsynth_out(base), expected, atol=1e-5, rtol=1e-4)


def test_a_format_refuses_a_variant_it_cannot_carry(tmp_path: Path) -> None:
    _trained("dora", tmp_path)
    with pytest.raises(KoloraError, match="kohya export cannot carry a dora"):
        to_kohya(load_lora(tmp_path / "lora.safetensors"), unet_layout(build_tiny_models(seed=0)["sdxl_unet"]))
    with pytest.raises(ValueError, match=r"train\.exports kohya cannot carry train\.lora_variant dora"):
        TrainConfig(lora_variant="dora", exports=["kohya"])
