"""The generate stage on tiny models: deterministic images that carry how they were made; shards partition the story."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.generate import main as generate_main
from kolora_core.config import load_config
from kolora_core.inference.story import GENERATIONS, read_png_record, shard_prompts


@pytest.fixture(scope="module")
def lora_dir(tiny_lora: Path) -> Path:
    return tiny_lora


def _generate(models: Path, lora: Path, out: Path, *extra: str) -> int:
    return generate_main(["--profile", "smoke", "--models", str(models), "--lora", str(lora), "--images", str(out), *extra])


def test_same_seed_same_image_and_metadata(tiny_models: Path, lora_dir: Path, tmp_path: Path) -> None:
    assert _generate(tiny_models, lora_dir, tmp_path / "a", "--generate.shards", "4", "--generate.shard", "1") == 0
    assert _generate(tiny_models, lora_dir, tmp_path / "b", "--generate.shards", "4", "--generate.shard", "1") == 0
    files = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert files == ["001.png", "005.png"]
    for name in files:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / name)), np.asarray(Image.open(tmp_path / "b" / name)))
    record = read_png_record(tmp_path / "a" / "005.png")
    story = load_config("full").generate.prompts[5]
    assert (record["prompt"], record["negative_prompt"], record["seed"]) == (story.prompt, story.negative_prompt, story.seed)
    assert (record["cfg_scale"], record["steps"], record["width"], record["lora_scale"]) == (4.0, 4, 64, 0.25)
    assert len(record["lora_sha256"]) == 64 and len(record["base_model_sha256"]) == 64
    lines = [json.loads(line) for line in (tmp_path / "a" / GENERATIONS).read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in lines] == files


def test_lora_strength_changes_the_image(tiny_models: Path, lora_dir: Path, tmp_path: Path) -> None:
    shard = ("--generate.shards", "8", "--generate.shard", "0")
    assert _generate(tiny_models, lora_dir, tmp_path / "full", *shard) == 0
    assert _generate(tiny_models, lora_dir, tmp_path / "none", *shard, "--generate.lora_strength", "0") == 0
    full = np.asarray(Image.open(tmp_path / "full" / "000.png"), dtype=np.int16)
    none = np.asarray(Image.open(tmp_path / "none" / "000.png"), dtype=np.int16)
    assert np.abs(full - none).max() > 0


def test_shards_partition_the_story() -> None:
    seen = []
    for shard in range(3):
        generate = load_config("full", overrides={"generate.shards": 3, "generate.shard": shard}).generate
        seen += [index for index, _ in shard_prompts(generate)]
    assert sorted(seen) == list(range(8))


def test_missing_lora_names_the_path(tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "_SUCCESS").write_text("{}")
    assert _generate(tiny_models, tmp_path / "lora", tmp_path / "out") == 2
    assert f"LoRA file {tmp_path / 'lora' / 'lora.safetensors'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["fast", "seed"])
def test_non_square_sizes_render_end_to_end(engine: str, tiny_models: Path, lora_dir: Path, tmp_path: Path) -> None:
    """width != height through the config, both samplers and the record (bucketed LoRAs are used at their aspects)."""
    flags = ("--generate.shards", "8", "--generate.shard", "0", "--generate.width", "128", "--generate.height", "64")
    assert _generate(tiny_models, lora_dir, tmp_path, *flags, "--generate.engine", engine) == 0
    image = Image.open(tmp_path / "000.png")
    assert image.size == (128, 64)
    record = read_png_record(tmp_path / "000.png")
    assert (record["width"], record["height"]) == (128, 64)
    assert np.asarray(image).std() > 0
