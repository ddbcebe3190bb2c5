"""A generated PNG as the ecosystem reads it: A1111's PNG-info rules, sd-parsers, and nothing ComfyUI would misread."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from sd_parsers import ParserManager
from sd_parsers.data import Generators

from jobs.generate import main as generate_main
from kolora_core.config import load_config
from kolora_core.inference.infotext import parameters_text
from kolora_core.inference.story import Generation, read_png_record
from kolora_core.lora.export import KOHYA_FILE
from kolora_core.models.layout import UNET_FILE, ModelDir
from tests.inference.a1111_infotext import lora_file_hash, lora_hashes, lora_tags, parse_generation_parameters


@pytest.fixture(scope="module")
def image(tiny_models: Path, tiny_lora: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images")
    args = ["--profile", "smoke", "--models", str(tiny_models), "--lora", str(tiny_lora), "--images", str(out)]
    assert generate_main([*args, "--generate.shards", "8", "--generate.shard", "2", "--generate.lora_strength", "0.8"]) == 0
    return out / "002.png"


def test_png_carries_a1111_parameters_and_kolora_json_only(image: Path) -> None:
    with Image.open(image) as png:
        assert set(png.text) == {"parameters", "kolora"}  # no `prompt`/`workflow`: ComfyUI reads those as its graph


def test_a1111_reads_prompt_seed_and_settings(image: Path, tiny_models: Path, tiny_lora: Path) -> None:
    story = load_config("full").generate.prompts[2]
    with Image.open(image) as png:
        params = parse_generation_parameters(png.text["parameters"])
    with safe_open(str(tiny_lora / KOHYA_FILE), framework="pt") as handle:
        lora_name = handle.metadata()["ss_output_name"]
    assert lora_name == "tiny-style"
    assert params["Prompt"] == f"{story.prompt} <lora:{lora_name}:0.8>"
    assert lora_tags(params["Prompt"]) == [(lora_name, 0.8)]
    assert params["Negative prompt"] == story.negative_prompt
    assert (params["Steps"], params["Sampler"], params["CFG scale"], params["Seed"]) == ("4", "DDIM", "4.0", str(story.seed))
    assert (params["Size-1"], params["Size-2"]) == ("64", "64")
    unet_sha256 = ModelDir(tiny_models).read_manifest()["files"][UNET_FILE]["sha256"]
    assert params["Model hash"] == unet_sha256[:10]
    assert params["Model"] == read_png_record(image)["base_model"]
    assert lora_hashes(params["Lora hashes"]) == {lora_name: lora_file_hash(tiny_lora / KOHYA_FILE)}


def test_sd_parsers_identifies_an_a1111_image(image: Path) -> None:
    """sd-parsers (a reader tools built on it use) tries Fooocus, A1111, ComfyUI, ... and must pick A1111."""
    info = ParserManager().parse(image)
    assert info is not None and info.generator == Generators.AUTOMATIC1111
    (sampler,) = info.samplers
    story = load_config("full").generate.prompts[2]
    assert sampler.name == "DDIM" and sampler.parameters["seed"] == str(story.seed)
    assert [p.value for p in sampler.negative_prompts] == [story.negative_prompt]
    assert sampler.prompts[0].value.startswith(story.prompt)


def _record(**changes: object) -> Generation:
    base = Generation(
        index=0,
        prompt="a cat",
        negative_prompt="",
        seed=3,
        cfg_scale=7.5,
        steps=30,
        width=1024,
        height=768,
        lora_strength=1.0,
        file="000.png",
        lora_scale=0.25,
        lora_sha256="0" * 64,
        base_model_sha256="1" * 64,
        seconds=1.0,
        base_model="Kwai-Kolors/Kolors + sdxl-vae-fp16-fix",
        unet_sha256="abcdef0123456789" * 4,
        lora_a1111_name="style, v2",
        lora_a1111_hash="0123456789ab",
    )
    return replace(base, **changes)


def test_values_that_would_break_the_line_are_quoted_and_read_back() -> None:
    params = parse_generation_parameters(parameters_text(_record(base_model="tiny random Kolors (v1, seed 0)")))
    assert params["Model"] == "tiny random Kolors (v1, seed 0)"
    assert params["Negative prompt"] == ""  # no negative: no "Negative prompt:" line, as A1111 writes it
    assert params["Prompt"] == "a cat <lora:style, v2:1>"
    assert lora_hashes(params["Lora hashes"]) == {"style v2": "0123456789ab"}  # A1111 drops ":" and "," there
    assert (params["Size-1"], params["Size-2"], params["Model hash"]) == ("1024", "768", "abcdef0123")


def test_without_a_kohya_export_no_lora_is_claimed() -> None:
    params = parse_generation_parameters(parameters_text(_record(lora_a1111_name="", lora_a1111_hash="")))
    assert params["Prompt"] == "a cat" and "Lora hashes" not in params
