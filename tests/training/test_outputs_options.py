"""Samples during training, TensorBoard logs, adapter variants through the stage, and exact resume with everything on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kolora_core.lora.export import DIFFUSERS_FILE, KOHYA_FILE
from kolora_core.lora.format import LORA_FILE, load_lora
from kolora_core.training.run import CRASH_ENV
from kolora_core.training.validation import STRIP_FILE
from tests.training.helpers import lora_max_diff, losses, train
from tests.training.test_options import write_aspect_trainset


def _scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    scalars = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]}
    scalars["images"] = [(e.step, 0.0) for t in tags["images"] for e in events.Images(t)]
    return scalars


def test_validation_strip_and_tensorboard(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    flags = ["--train.steps", "4", "--train.validation_every", "2", "--train.validation_steps", "2",
             "--train.tensorboard", "true", "--train.max_grad_norm", "1.0"]  # fmt: skip
    assert train(tiny_models, tiny_trainset, tmp_path, *flags) == 0
    names = sorted(p.name for p in (tmp_path / "validation").iterdir())
    assert names == [f"step-{s:06d}-{i}.png" for s in (0, 2, 4) for i in (0, 1)], "the story's first two, steps 0, 2, 4"
    strip = Image.open(tmp_path / STRIP_FILE)
    assert strip.size == (3 * 256, 2 * (256 + 14))
    first, last = (
        Image.open(tmp_path / "validation" / "step-000000-0.png"),
        Image.open(tmp_path / "validation" / "step-000004-0.png"),
    )
    assert first.size == (64, 64) and first.tobytes() != last.tobytes(), "the LoRA of step 4 renders another image"
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["validation"]["rendered_steps"] == [0, 2, 4] and summary["validation"]["seconds_per_image"] > 0
    scalars = _scalars(tmp_path)
    for tag in ("loss", "lr", "images_per_second", "grad_norm"):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3, 4], tag
    assert [v for _, v in scalars["loss"]] == pytest.approx(losses(tmp_path), abs=1e-6)
    assert sorted({s for s, _ in scalars["images"]}) == [0, 2, 4]
    assert all(v > 0 for _, v in scalars["grad_norm"])


@pytest.mark.parametrize(("variant", "files"), [("dora", [DIFFUSERS_FILE]), ("loha", [KOHYA_FILE]), ("lokr", [KOHYA_FILE])])
def test_variants_train_and_export_what_can_carry_them(
    variant: str, files: list[str], tiny_models: Path, tiny_trainset: Path, tmp_path: Path
) -> None:
    assert train(tiny_models, tiny_trainset, tmp_path, "--train.steps", "2", "--train.lora_variant", variant) == 0
    lora = load_lora(tmp_path / LORA_FILE)
    assert lora.variant == variant and len(lora.modules()) == 32
    assert sorted(p.name for p in tmp_path.glob("lora_*.safetensors")) == files
    assert json.loads((tmp_path / "train_summary.json").read_text())["exports"] == files


def test_a_refused_combination_stops_before_any_model_loads(
    tiny_trainset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path / "no-models", tiny_trainset, tmp_path / "out", "--train.lora_variant", "dora",
                 "--train.exports", "[kohya]") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "train.exports kohya cannot carry train.lora_variant dora" in err and len(err.strip().splitlines()) == 1


EVERYTHING = ["--train.steps", "6", "--train.checkpoint_every", "2", "--train.resolution", "192", "--train.buckets", "true",
              "--train.random_flip", "true", "--train.lora_variant", "loha", "--train.optimizer", "adamw8bit",
              "--train.lr_scheduler", "cosine", "--train.lr_warmup_steps", "2", "--train.gradient_accumulation", "2",
              "--train.max_grad_norm", "1.0", "--train.min_snr_gamma", "5", "--train.noise_offset", "0.05",
              "--train.caption_dropout", "0.3", "--train.ema_decay", "0.9", "--train.validation_every", "3",
              "--train.validation_steps", "2", "--train.tensorboard", "true"]  # fmt: skip


@pytest.mark.slow
def test_resume_with_every_option_on_is_exact(tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after step 5 (checkpoint at 4), rerun: the LoRA (the EMA), the CSV and the strip of the uninterrupted run."""
    trainset = write_aspect_trainset(tmp_path / "ts")
    assert train(tiny_models, trainset, tmp_path / "full", *EVERYTHING) == 0
    out = tmp_path / "resumed"
    monkeypatch.setenv(CRASH_ENV, "5")
    assert train(tiny_models, trainset, out, *EVERYTHING) == 1
    monkeypatch.delenv(CRASH_ENV)
    assert train(tiny_models, trainset, out, *EVERYTHING) == 0
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == "step 4"
    assert lora_max_diff(out, tmp_path / "full") == 0.0
    assert losses(out) == losses(tmp_path / "full")
    assert Image.open(out / STRIP_FILE).tobytes() == Image.open(tmp_path / "full" / STRIP_FILE).tobytes()
    assert [s for s, _ in _scalars(out)["loss"]] == [1, 2, 3, 4, 5, 6]
