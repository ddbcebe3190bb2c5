"""A killed run, rerun with the same command, continues from its last checkpoint to the uninterrupted run's LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kolora_core.training.checkpoint import PREFIX, SUFFIX, list_checkpoints
from kolora_core.training.run import CRASH_ENV
from kolora_core.training.state_file import load_state
from tests.training.helpers import lora_max_diff, losses, train
from tests.training.test_checkpoint import Payload

# batch 2, random crops (cached) and flips: every source of per-step randomness is exercised
FLAGS = ["--train.steps", "6", "--train.checkpoint_every", "2", "--train.batch_size", "2", "--train.random_flip", "true",
         "--train.center_crop", "false", "--train.cached_crops", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tiny_models: Path, tiny_trainset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "lora"
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 0
    return out


def test_crash_and_rerun_gives_the_same_lora(
    uninterrupted: Path,
    tiny_models: Path,
    tiny_trainset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "lora"
    monkeypatch.setenv(CRASH_ENV, "5")
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 1
    saved = list_checkpoints(out.parent / f"{out.name}.checkpoints")
    assert [p.name for p in saved] == ["step-00000004.safetensors", "step-00000002.safetensors"], "last two kept, newest first"
    assert not (out / "_SUCCESS").exists()
    marker = tmp_path / "code-ran"  # a newer "checkpoint" from whoever can write the bucket: a pickle
    torch.save({"lora": Payload(marker)}, out.parent / f"{out.name}.checkpoints" / f"{PREFIX}00000005{SUFFIX}")

    monkeypatch.delenv(CRASH_ENV)
    with caplog.at_level("INFO", logger="kolora.train"):
        assert train(tiny_models, tiny_trainset, out, *FLAGS) == 0
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from")] == [
        f"resuming from {out.parent / 'lora.checkpoints' / 'step-00000004.safetensors'} (step 4)"
    ], "said once (the early settings check loads it too)"
    assert not marker.exists(), "loading a checkpoint ran code from it"
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == "step 4"
    assert lora_max_diff(out, uninterrupted) <= 1e-6
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-6), "the CSV covers every step once"
    assert not (out.parent / f"{out.name}.checkpoints").exists()


def test_checkpoint_holds_the_full_training_state(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "lora"
    monkeypatch.setenv(CRASH_ENV, "2")
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 1
    state = load_state(out.parent / f"{out.name}.checkpoints" / "step-00000002.safetensors")
    assert state["step"] == 2 and len(state["history"]) == 2
    assert state["lora"] and all(".lora_" in k for k in state["lora"])
    assert {"state", "param_groups"} <= set(state["optimizer"]) and len(state["optimizer"]["state"]) == len(state["lora"])
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert state["fingerprint"]["train"]["global_batch"] == 2


def test_rerun_with_other_settings_is_refused(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lora"
    monkeypatch.setenv(CRASH_ENV, "2")
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 1
    monkeypatch.delenv(CRASH_ENV)
    assert train(tiny_models, tiny_trainset, out, *FLAGS, "--train.learning_rate", "0.001") == 2
    assert "train.learning_rate" in capsys.readouterr().err


def test_kept_checkpoint_extends_a_finished_run(
    uninterrupted: Path, tiny_models: Path, tiny_trainset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    shorter = [f if f != "6" else "4" for f in FLAGS]
    assert train(tiny_models, tiny_trainset, out, *shorter, "--train.keep_checkpoints", "true") == 0
    assert list_checkpoints(out.parent / f"{out.name}.checkpoints")[0].name == "step-00000004.safetensors"
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 0
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == "step 4"
    assert lora_max_diff(out, uninterrupted) <= 1e-6
