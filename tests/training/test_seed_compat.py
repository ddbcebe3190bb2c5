"""The fast engine is the seed's objective: diffsynth's own training_step gives the same loss, gradients and LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolora_core.config import TrainConfig
from kolora_core.data.layout import read_trainset
from kolora_core.models.layout import ModelDir
from kolora_core.training.seed_compat import REPORT_FILE, seed_compat_check
from tests.training.helpers import LOSS_CSV_TOLERANCE, lora_max_diff, losses, train


@pytest.mark.parametrize("batch_size", [1, 2])
def test_one_step_equals_diffsynths_training_step(tiny_models: Path, tiny_trainset: Path, batch_size: int) -> None:
    train_config = TrainConfig(
        resolution=64, precision="32-true", gradient_checkpointing=False, num_workers=0, batch_size=batch_size
    )
    report = seed_compat_check(train_config, tiny_trainset, read_trainset(tiny_trainset), ModelDir(tiny_models), "cpu")
    assert report["lora_init_identical"]
    assert abs(report["seed_loss"] - report["fast_loss"]) <= 1e-6
    assert report["grad_max_abs_diff"] <= 1e-6 * max(1.0, report["grad_max_abs"])
    assert report["passed"]


def test_seed_compat_flag_writes_the_proof(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert (
        train(tiny_models, tiny_trainset, out, "--train.steps", "1", "--train.seed_compat", "true", "--train.random_flip", "true")
        == 0
    )
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["passed"] and report["loss_abs_diff"] <= 1e-6
    assert report["seed_loss"] == pytest.approx(losses(out)[0], abs=1e-6), "the proven step is the run's first step"


def test_seed_and_fast_engines_train_the_same_lora(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """Three steps of diffsynth's training_step (ChatGLM + VAE every step) == three cached fast-engine steps."""
    flags = ["--train.steps", "3", "--train.batch_size", "2", "--train.timestep_sampling", "per_batch"]
    assert train(tiny_models, tiny_trainset, tmp_path / "seed", *flags, "--train.engine", "seed") == 0
    assert train(tiny_models, tiny_trainset, tmp_path / "fast", *flags) == 0
    assert losses(tmp_path / "seed") == pytest.approx(losses(tmp_path / "fast"), abs=LOSS_CSV_TOLERANCE)
    assert lora_max_diff(tmp_path / "seed", tmp_path / "fast") <= 1e-6
