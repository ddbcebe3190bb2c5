"""The generate stage on tiny models: deterministic images that carry how they were made; shards partition the story."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.generate import main as generate_main
from kolora_core.config import load_config
from kolora_core.inference.progress import Progress
from kolora_core.inference.run import CRASH_ENV
from kolora_core.inference.story import GENERATIONS, Generation, read_png_record, shard_prompts
from tests.conftest import mark_complete


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
    mark_complete(tmp_path / "lora")
    assert _generate(tiny_models, tmp_path / "lora", tmp_path / "out") == 2
    assert f"LoRA file {tmp_path / 'lora' / 'lora.safetensors'} does not exist" in capsys.readouterr().err


def test_a_retry_renders_only_what_is_missing(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shard = ("--generate.shards", "4", "--generate.shard", "1")  # story images 001 and 005
    assert _generate(tiny_models, lora_dir, tmp_path / "whole" / "images", *shard) == 0
    out, progress = tmp_path / "run" / "images", tmp_path / "run" / "images.progress"
    monkeypatch.setenv(CRASH_ENV, "1")
    assert _generate(tiny_models, lora_dir, out, *shard) == 1
    assert out.is_dir() and not any(out.iterdir()), "the failed attempt committed nothing"
    assert sorted(p.name for p in progress.iterdir()) == ["001.json", "001.png"], "but kept its finished image"
    with caplog.at_level("INFO", logger="kolora.generate"):
        assert _generate(tiny_models, lora_dir, out, *shard) == 0  # CRASH_ENV still set: 001 is not rendered again
    assert "(1 finished by an earlier attempt)" in caplog.text and "image 1/1 (story #5" in caplog.text
    for name in ("001.png", "005.png"):
        whole = tmp_path / "whole" / "images" / name
        pixels = [np.asarray(Image.open(path), dtype=np.int16) for path in (out / name, whole)]
        assert np.abs(pixels[0] - pixels[1]).max() <= 1  # 005 rendered alone, not beside 001: float rounding only
        assert {**read_png_record(out / name), "seconds": 0} == {**read_png_record(whole), "seconds": 0}
    lines = [json.loads(line) for line in (out / GENERATIONS).read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in lines] == ["001.png", "005.png"]
    assert not progress.exists(), "removed once the output is committed, as train removes its checkpoints"


def test_kept_images_that_do_not_match_are_rendered_again(tiny_models: Path, lora_dir: Path, tmp_path: Path) -> None:
    shard = ("--generate.shards", "8", "--generate.shard", "0")  # story image 000
    progress = tmp_path / "progress"
    keep = Progress(progress, {})
    assert _generate(tiny_models, lora_dir, tmp_path / "a", *shard, "--progress", str(progress)) == 0
    good = np.asarray(Image.open(tmp_path / "a" / "000.png"))
    record = Generation(**json.loads((tmp_path / "a" / GENERATIONS).read_text(encoding="utf-8")))
    for tamper in ("bytes", "prompt"):
        progress.mkdir(exist_ok=True)
        keep.save(Image.new("RGB", (64, 64), "red"), record if tamper == "bytes" else replace(record, prompt="other"))
        if tamper == "bytes":
            (progress / "000.png").write_bytes(b"\x89PNG not the image its record hashed")
        out = tmp_path / tamper
        assert _generate(tiny_models, lora_dir, out, *shard, "--progress", str(progress)) == 0
        assert np.array_equal(np.asarray(Image.open(out / "000.png")), good), tamper


def test_fp8_renders_close_to_fp16_records_it_and_a_kept_fp16_image_is_not_reused(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shard = ("--generate.shards", "8", "--generate.shard", "0")  # story image 000
    progress = tmp_path / "progress"
    assert _generate(tiny_models, lora_dir, tmp_path / "fp16", *shard) == 0
    record = Generation(**json.loads((tmp_path / "fp16" / GENERATIONS).read_text(encoding="utf-8")))
    Progress(progress, {}).save(Image.open(tmp_path / "fp16" / "000.png"), record)  # as if an fp16 attempt was cut off
    with caplog.at_level("INFO", logger="kolora.generate"):
        assert _generate(tiny_models, lora_dir, tmp_path / "fp8", *shard, "--progress", str(progress), "--generate.fp8", "1") == 0
    assert "8 feed-forward layers in FP8" in caplog.text
    assert "(0 finished by an earlier attempt)" in caplog.text, "an fp16 image is not an FP8 run's image"
    assert read_png_record(tmp_path / "fp8" / "000.png")["fp8"] is True
    assert read_png_record(tmp_path / "fp16" / "000.png")["fp8"] is False
    fp16, fp8 = (np.asarray(Image.open(tmp_path / d / "000.png"), dtype=np.int16) for d in ("fp16", "fp8"))
    assert 0 < np.abs(fp16 - fp8).mean() < 4, "the LoRA'd UNet in e4m3 renders nearly the same picture"


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused_before_the_models_load(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kolora_core.inference.run as generate_run

    monkeypatch.setattr(generate_run, "fp8_unsupported", lambda device: "NVIDIA A100 (sm80) has no FP8 tensor cores")
    monkeypatch.setattr(generate_run, "load_model_manager", lambda *a, **k: pytest.fail("the models were loaded"))
    assert _generate(tiny_models, lora_dir, tmp_path / "out", "--generate.fp8", "1") == 2
    assert "generate.fp8: NVIDIA A100 (sm80) has no FP8 tensor cores; set generate.fp8 false" in capsys.readouterr().err
    assert not any((tmp_path / "out").glob("*")), "nothing committed"


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


def test_models_verify_sha256_names_a_file_damaged_in_place(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.training.test_train_stage import damaged_copy

    broken, unet = damaged_copy(tiny_models, tmp_path, "data")
    assert _generate(broken, lora_dir, tmp_path / "out", "--models.verify", "sha256") == 2
    assert f"weight file {unet} does not match its sha256" in capsys.readouterr().err


def test_a_prompt_longer_than_the_text_encoder_reads_is_said(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """KolorsPrompter cuts every text at ChatGLM3's 256 tokens without a word: the end of a long prompt never
    reached the image while its records showed it whole. Now one warning per cut text names the story image, the
    token count and where the cut falls; a negative prompt only where CFG encodes it."""
    long = "二次元,一个紫色短发小女孩,穿着粉色吊带漏肩连衣裙,在练习室练习唱歌,手持话筒," * 12  # 327 tokens
    story = json.dumps([{"prompt": "short"}, {"prompt": long, "negative_prompt": long, "seed": 1, "cfg_scale": 1}])
    with caplog.at_level("WARNING", logger="kolora.generate"):
        assert _generate(tiny_models, lora_dir, tmp_path / "out", "--generate.prompts", story, "--generate.steps", "1") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "story #1: the prompt is 327 tokens, the text encoder (ChatGLM3) reads 256: from '粉色吊带漏肩连衣裙,在练...' on "
        "(71 tokens) it does not reach the image; shorten it"
    ]


def test_a_shard_beyond_the_story_commits_an_empty_output_without_loading_anything(
    tiny_models: Path, lora_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """generate-shards=12 over the 8-prompt story, as `argo submit` or the nightly can still pass it: shards 8-11 render
    nothing. Such a shard ends at once with one warning, reading neither the LoRA nor the models (not even their
    manifest: `models.verify sha256` reads every weight file), and commits an empty output that evaluate merges."""
    import kolora_core.inference.run as generate_run
    from kolora_core.commit import accept_input
    from kolora_core.inference.story import collect_generations
    from kolora_core.models.layout import ModelDir

    images = tmp_path / "images"
    assert _generate(tiny_models, lora_dir, images / "shard-0", "--generate.shards", "12", "--generate.shard", "0") == 0
    for name in ("load_model_manager", "load_lora", "resolve_device"):
        monkeypatch.setattr(generate_run, name, lambda *a, name=name, **k: pytest.fail(f"{name} was called"))
    monkeypatch.setattr(ModelDir, "read_manifest", lambda *a, **k: pytest.fail("the models' manifest was read"))
    out, progress = images / "shard-9", tmp_path / "progress-9"
    shard = ("--generate.shards", "12", "--generate.shard", "9", "--progress", str(progress), "--models.verify", "sha256")
    with caplog.at_level("INFO", logger="kolora.generate"):
        assert _generate(tiny_models, lora_dir, out, *shard) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "kolora.generate"] == [
        "shard 9/12: no prompts (the story has 8, prompt i goes to shard i % 12): nothing to render, the LoRA and the "
        "models are not loaded; set generate-shards to 8 or fewer"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", GENERATIONS] and (out / GENERATIONS).read_text() == ""
    assert not progress.exists(), "the resumable dir goes once the output is committed, as after a rendered shard"
    accept_input("images", images)  # both shards committed, as evaluate's stage shell takes them
    assert [r["index"] for r in collect_generations(images)] == [0]
