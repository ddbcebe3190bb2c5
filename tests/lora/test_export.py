"""The diffusers and kohya exports load at the trained strength in diffusers, diffsynth and kohya-keyed loaders.

A tiny diffusers `UNet2DConditionModel` is laid out like `TinyKolorsUNet` and given the same base
weights (diffsynth names converted by `kolora_core.lora.export`), so both UNets compute the same function; a
LoRA-trained diffsynth UNet (peft, the training-time module) is the reference every loader must hit.
Names are also checked on the full-size Kolors UNet against diffsynth's own converters; `test_consumers.py`
loads the full-size exports through diffusers' loaders and ComfyUI's key mapping layer by layer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import diffusers
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from kolora_core.lora.export import (
    DIFFUSERS_FILE,
    KOHYA_FILE,
    diffsynth_to_diffusers,
    diffusers_block_names,
    kohya_key,
    read_export,
    unet_layout,
    write_exports,
)
from kolora_core.lora.format import load_lora, lora_state_from_model, save_lora
from kolora_core.lora.merge import merge_lora
from kolora_core.models.tiny import ADD_TIME_DIM, CROSS_DIM, TEXT_HIDDEN, build_tiny_models
from tests.lora.kolors_diffusers import kolors_pipeline

warnings.filterwarnings("ignore", module="diffusers")

TARGETS = ["to_q", "to_k", "to_v", "to_out"]


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500.0, 20.0]),
        "encoder_hidden_states": torch.randn(2, 7, TEXT_HIDDEN, generator=g),
        "add_text_embeds": torch.randn(2, TEXT_HIDDEN, generator=g),
    }


def _diffsynth_out(unet: torch.nn.Module) -> torch.Tensor:
    x = _inputs()
    with torch.no_grad():
        return unet(**x, add_time_id=torch.tensor([64, 64, 0, 0, 64, 64]).repeat(2))


def _diffusers_out(unet: torch.nn.Module) -> torch.Tensor:
    x = _inputs()
    with torch.no_grad():
        return unet(
            x["sample"],
            x["timestep"],
            encoder_hidden_states=x["encoder_hidden_states"],
            added_cond_kwargs={"text_embeds": x["add_text_embeds"], "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 2)},
        ).sample


def tiny_diffusers_unet(diffsynth_unet: torch.nn.Module) -> torch.nn.Module:
    """`TinyKolorsUNet` as a diffusers UNet2DConditionModel, holding the same base weights."""
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        attention_head_dim=(2, 2),  # diffusers' legacy name for the number of heads
        cross_attention_dim=CROSS_DIM,
        transformer_layers_per_block=1,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADD_TIME_DIM,
        projection_class_embeddings_input_dim=TEXT_HIDDEN + 6 * ADD_TIME_DIM,
        encoder_hid_dim=TEXT_HIDDEN,
        encoder_hid_dim_type="text_proj",  # Kolors' 4096 -> 2048 projection
        flip_sin_to_cos=True,
        freq_shift=0,
    ).eval()
    blocks = diffusers_block_names(unet_layout(diffsynth_unet))
    converted = {diffsynth_to_diffusers(k, blocks): v for k, v in diffsynth_unet.state_dict().items()}
    unet.load_state_dict(converted, strict=True)
    # diffsynth's AttentionBlock GroupNorm uses eps 1e-5 where diffusers' Transformer2DModel uses 1e-6.
    for name, module in unet.named_modules():
        if name.endswith("attentions.0.norm") or name.endswith("attentions.1.norm"):
            module.eps = 1e-5
    return unet


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, Path, list[str]]:
    """A peft-LoRA tiny diffsynth UNet as after training (B != 0), its output and the three LoRA files."""
    unet = build_tiny_models(seed=0)["sdxl_unet"].eval()
    unet = inject_adapter_in_model(LoraConfig(r=16, lora_alpha=4.0, init_lora_weights="gaussian", target_modules=TARGETS), unet)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
            param.requires_grad_("lora_" in name)
    out = tmp_path_factory.mktemp("export")
    save_lora(out / "lora.safetensors", lora_state_from_model(unet), rank=16, alpha=4.0, extra={})
    layout = unet_layout(build_tiny_models(seed=0)["sdxl_unet"])
    write_exports(out, load_lora(out / "lora.safetensors"), layout, output_name="kolora")
    return _diffsynth_out(unet), out, layout


def test_base_weights_convert_to_an_equal_diffusers_unet() -> None:
    base = build_tiny_models(seed=0)["sdxl_unet"].eval()
    torch.testing.assert_close(_diffusers_out(tiny_diffusers_unet(base)), _diffsynth_out(base), atol=1e-5, rtol=1e-4)


def test_diffusers_export_loads_at_trained_strength(trained: tuple[torch.Tensor, Path, list[str]]) -> None:
    expected, out, _ = trained
    from safetensors.torch import load_file

    unet = tiny_diffusers_unet(build_tiny_models(seed=0)["sdxl_unet"].eval())
    without = _diffusers_out(unet)
    unet.load_lora_adapter(load_file(str(out / DIFFUSERS_FILE)), prefix="unet", adapter_name="kolora")
    assert not torch.allclose(without, expected, atol=1e-3), "the LoRA must change the output for the test to mean anything"
    torch.testing.assert_close(_diffusers_out(unet), expected, atol=1e-5, rtol=1e-4)


def test_kohya_export_loads_at_trained_strength(trained: tuple[torch.Tensor, Path, list[str]]) -> None:
    """diffusers' kohya path: SGM block names -> diffusers, `.alpha` -> scale alpha/rank (as ComfyUI and A1111)."""
    expected, out, _ = trained
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    kohya = load_file(str(out / KOHYA_FILE))
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {4.0}
    unet = tiny_diffusers_unet(build_tiny_models(seed=0)["sdxl_unet"].eval())
    state, alphas = StableDiffusionXLPipeline.lora_state_dict(kohya, unet_config=unet.config)
    StableDiffusionXLPipeline.load_lora_into_unet(state, alphas, unet=unet, adapter_name="kolora")
    torch.testing.assert_close(_diffusers_out(unet), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "with_unet_config"), [(DIFFUSERS_FILE, False), (KOHYA_FILE, True)], ids=["diffusers", "kohya"])
def test_kolors_pipeline_load_lora_weights_matches_kolora_merged_unet(
    trained: tuple[torch.Tensor, Path, list[str]], name: str, with_unet_config: bool
) -> None:
    """What a diffusers user runs (docs/training.md) gives the output of kolora's own merged diffsynth UNet."""
    _, out, _ = trained
    merged = build_tiny_models(seed=0)["sdxl_unet"].eval()
    merge_lora(merged, load_lora(out / "lora.safetensors"))
    unet = tiny_diffusers_unet(build_tiny_models(seed=0)["sdxl_unet"].eval())
    pipe = kolors_pipeline(unet)
    pipe.load_lora_weights(str(out / name), **({"unet_config": pipe.unet.config} if with_unet_config else {}))
    torch.testing.assert_close(_diffusers_out(pipe.unet), _diffsynth_out(merged), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["lora.safetensors", DIFFUSERS_FILE, KOHYA_FILE])
def test_every_file_merges_into_diffsynth_at_trained_strength(trained: tuple[torch.Tensor, Path, list[str]], name: str) -> None:
    expected, out, layout = trained
    lora = load_lora(out / name) if name == "lora.safetensors" else read_export(out / name, layout)
    base = build_tiny_models(seed=0)["sdxl_unet"].eval()
    assert merge_lora(base, lora) == 32
    torch.testing.assert_close(_diffsynth_out(base), expected, atol=1e-5, rtol=1e-4)


def test_diffsynth_own_loader_needs_alpha_over_rank(trained: tuple[torch.Tensor, Path, list[str]]) -> None:
    """diffsynth's GeneralLoRAFromPeft merges alpha * B @ A (no /rank): lora_alpha = alpha/rank is the trained strength."""
    from diffsynth.models.lora import GeneralLoRAFromPeft
    from safetensors.torch import load_file

    expected, out, _ = trained
    base = build_tiny_models(seed=0)["sdxl_unet"].eval()
    loader, state = GeneralLoRAFromPeft(), load_file(str(out / "lora.safetensors"))
    assert loader.match(base, state) is not None
    loader.load(base, state, alpha=4.0 / 16)
    torch.testing.assert_close(_diffsynth_out(base), expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def full_size_unet() -> torch.nn.Module:
    from diffsynth.models.sdxl_unet import SDXLUNet

    with torch.device("meta"):
        return SDXLUNet(is_kolors=True)


def test_full_size_names_invert_diffsynths_from_diffusers(full_size_unet: torch.nn.Module) -> None:
    """Every Kolors UNet parameter, renamed to diffusers by kolora, maps back to itself through diffsynth's converter."""
    blocks = diffusers_block_names(unet_layout(full_size_unet))
    params = dict(full_size_unet.named_parameters())
    as_diffusers = {diffsynth_to_diffusers(name, blocks): p for name, p in params.items()}
    back, extra = full_size_unet.state_dict_converter().from_diffusers(as_diffusers)
    assert extra == {"is_kolors": True}
    assert set(back) == set(params)
    lora_targets = [n for n, m in full_size_unet.named_modules() if n.rsplit(".", 1)[-1] in TARGETS]
    assert len(lora_targets) == 560  # FACTS: 560 Linear layers at the seed's targets
    assert diffsynth_to_diffusers("blocks.7.transformer_blocks.0.attn1.to_out", blocks) == (
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"
    )


def test_full_size_kohya_keys_are_what_diffsynth_and_sgm_expect(full_size_unet: torch.nn.Module) -> None:
    """kohya keys through diffsynth's SDXLLoRAFromCivitai renaming and from_civitai land on every LoRA target."""
    from diffsynth.models.lora import SDXLLoRAFromCivitai

    blocks = diffusers_block_names(unet_layout(full_size_unet))
    targets = [n for n, m in full_size_unet.named_modules() if n.rsplit(".", 1)[-1] in TARGETS]
    special = SDXLLoRAFromCivitai().special_keys
    civitai = {}
    for module in targets:
        # SDXLLoRAFromCivitai.convert_state_dict_up_down's renaming (which runs on CUDA only), verbatim:
        name = kohya_key(module, blocks).replace("lora_unet_", "").replace("_", ".") + ".weight"
        for key, value in special.items():
            name = name.replace(key, value)
        civitai[name] = module
    renamed = full_size_unet.state_dict_converter().from_civitai(dict.fromkeys(civitai, torch.zeros(1)))
    renamed = renamed[0] if isinstance(renamed, tuple) else renamed
    assert set(renamed) == {m + ".weight" for m in targets}
    assert (
        kohya_key("blocks.7.transformer_blocks.0.attn1.to_out", blocks)
        == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0"
    )
    assert kohya_key("blocks.25.transformer_blocks.9.attn2.to_k", blocks).startswith("lora_unet_output_blocks_0_1_")
