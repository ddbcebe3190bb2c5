"""Step semantics across devices: 2 DDP processes x batch 1 train the same LoRA as 1 process x batch 2.

Runs two CPU processes (gloo) through the same Fabric `ddp_spawn` path the GPUs use; each rank takes its
slice of the step's global batch, noise and timesteps, so only the all-reduce's float order differs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.training.helpers import lora_max_diff, losses, train

pytestmark = pytest.mark.slow


def test_two_devices_equal_one_device_with_the_global_batch(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    assert train(tiny_models, tiny_trainset, tmp_path / "one", "--train.steps", "3", "--train.batch_size", "2") == 0
    assert train(tiny_models, tiny_trainset, tmp_path / "two", "--train.steps", "3", "--train.devices", "2") == 0
    assert lora_max_diff(tmp_path / "one", tmp_path / "two") <= 1e-5
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5), "logged loss is the global batch's"
    rows = list(csv.DictReader((tmp_path / "two" / "train_log.csv").read_text(encoding="utf-8").splitlines()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3], "steps are optimizer steps, not steps x devices"


def test_accumulation_across_devices_equals_one_batch(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """2 devices x batch 1 x 2 micro-batches (with clipping) step like 1 device x batch 4: same images, noise,
    timesteps and gradient (the micro-batches' losses are halved, DDP syncs only the last backward)."""
    common = ["--train.steps", "3", "--train.max_grad_norm", "0.01"]
    assert train(tiny_models, tiny_trainset, tmp_path / "one", *common, "--train.batch_size", "4") == 0
    assert train(tiny_models, tiny_trainset, tmp_path / "two", *common, "--train.devices", "2",
                 "--train.gradient_accumulation", "2") == 0  # fmt: skip
    assert lora_max_diff(tmp_path / "one", tmp_path / "two") <= 1e-5
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)


def test_compiled_unets_train_the_same_lora_across_devices(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """Both compile scopes under DDP (inductor in each spawned rank: the ranks do not see a test's monkeypatch, so
    this is the real compiler on the CPU, ~90 s a scope): the one-device eager LoRA, to float rounding."""
    assert train(tiny_models, tiny_trainset, tmp_path / "one", "--train.steps", "3", "--train.batch_size", "2") == 0
    for scope, summarised in (("true", True), ("whole", "whole")):
        out = tmp_path / scope
        assert train(tiny_models, tiny_trainset, out, "--train.steps", "3", "--train.devices", "2", "--train.compile", scope) == 0
        assert json.loads((out / "train_summary.json").read_text())["compile"] == summarised
        assert lora_max_diff(tmp_path / "one", out) <= 1e-5
        assert losses(out) == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
