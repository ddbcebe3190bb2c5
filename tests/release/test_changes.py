"""check-changes: `unchanged` only when the trainset and the training identity equal the champion's release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.check_changes import main as check_changes
from kolora_core.config import load_config
from kolora_core.data.layout import read_trainset, trainset_fingerprint
from kolora_core.training.identity import training_identity, training_inputs
from tests.conftest import mark_complete, no_champion, write_trainset


def _champion(root: Path, trainset: Path, **overrides: object) -> Path:
    """A found champion whose release.json was trained with the smoke profile (+ overrides) on `trainset`."""
    config = load_config("smoke", overrides=overrides or None)
    root.mkdir(parents=True)
    release = {
        "name": "kolora",
        "version": "v1",
        "training_identity": training_identity(config),
        "trainset_sha256": trainset_fingerprint(trainset, read_trainset(trainset)),
        "training_inputs": training_inputs(config),
    }
    (root / "release.json").write_text(json.dumps(release), encoding="utf-8")
    (root / "champion.json").write_text(json.dumps({"status": "found", "name": "kolora", "version": "v1"}), encoding="utf-8")
    return mark_complete(root)


def _check(trainset: Path, champion: Path, out: Path, *flags: str) -> dict:
    argv = ["--profile", "smoke", "--trainset", str(trainset), "--champion", str(champion), "--changes", str(out), *flags]
    assert check_changes(argv) == 0
    changes = json.loads((out / "changes.json").read_text(encoding="utf-8"))
    assert (out / "training.txt").read_text() == changes["training"] + "\n"
    return changes


@pytest.fixture
def trainset(tmp_path: Path) -> Path:
    return write_trainset(tmp_path / "trainset")


def test_same_data_and_config_is_unchanged(trainset: Path, tmp_path: Path) -> None:
    changes = _check(trainset, _champion(tmp_path / "c", trainset), tmp_path / "out", "--train.num_workers", "5")
    assert changes["training"] == "unchanged" and changes["differs"] == []
    assert "would give the same LoRA" in changes["reason"] and changes["champion"]["version"] == "v1"


def test_no_champion_is_changed(trainset: Path, tmp_path: Path) -> None:
    changes = _check(trainset, no_champion(tmp_path / "c"), tmp_path / "out")
    assert changes["training"] == "changed" and changes["reason"] == "no champion of kolora yet: training"


def test_another_training_config_names_the_fields(trainset: Path, tmp_path: Path) -> None:
    champion = _champion(tmp_path / "c", trainset)
    changes = _check(trainset, champion, tmp_path / "out", "--train.steps", "7", "--train.learning_rate", "0.001")
    assert changes["training"] == "changed" and changes["differs"] == ["training_identity"]
    assert changes["fields"] == ["train.learning_rate", "train.steps"]
    assert changes["reason"] == "the training config differs from champion kolora v1's (train.learning_rate, train.steps)"


def test_other_data_is_changed(trainset: Path, tmp_path: Path) -> None:
    champion = _champion(tmp_path / "c", trainset)
    other = write_trainset(tmp_path / "other", count=5)
    changes = _check(other, champion, tmp_path / "out")
    assert changes["training"] == "changed" and changes["differs"] == ["trainset_sha256"]
    assert changes["reason"] == "the trainset differs from champion kolora v1's"


def test_a_champion_without_recorded_identity_is_changed(trainset: Path, tmp_path: Path) -> None:
    champion = _champion(tmp_path / "c", trainset)
    release = json.loads((champion / "release.json").read_text())
    del release["training_identity"]
    (champion / "release.json").write_text(json.dumps(release))
    changes = _check(trainset, champion, tmp_path / "out")
    assert changes["training"] == "changed" and "records no training identity" in changes["reason"]
