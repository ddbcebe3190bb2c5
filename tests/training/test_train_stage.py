"""The train stage on tiny models: the seed's objective, a LoRA file that says how to apply it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from jobs.train import main as train_main
from kolora_core.lora import LORA_FILE, load_lora
from tests.conftest import write_trainset


@pytest.fixture(scope="module")
def trained(tiny_models: Path, tiny_trainset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora")
    argv = [
        "--profile",
        "smoke",
        "--trainset",
        str(tiny_trainset),
        "--models",
        str(tiny_models),
        "--lora",
        str(out),
        "--train.steps",
        "3",
    ]
    assert train_main(argv) == 0
    return out


def test_lora_file_has_peft_keys_and_metadata(trained: Path, tiny_models: Path) -> None:
    lora = load_lora(trained / LORA_FILE)
    assert (lora.rank, lora.alpha, lora.scale) == (16, 4.0, 0.25)
    modules = lora.modules()
    assert modules and all(m.rsplit(".", 1)[-1] in {"to_q", "to_k", "to_v", "to_out"} for m in modules)
    assert all(k.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for k in lora.tensors)
    assert json.loads(lora.metadata["targets"]) == ["to_q", "to_k", "to_v", "to_out"]
    assert len(lora.metadata["base_model_sha256"]) == 64 and len(lora.metadata["dataset_sha256"]) == 64
    # gaussian init leaves B at zero; three AdamW steps at lr 1e-4 must have moved it
    assert any(lora.tensors[m + ".lora_B.default.weight"].abs().sum() > 0 for m in modules)


def test_loss_log_and_summary(trained: Path) -> None:
    rows = list(csv.DictReader((trained / "train_log.csv").open(encoding="utf-8")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_loss"] == pytest.approx(float(rows[-1]["loss"]), abs=1e-5)


def test_empty_trainset_fails_before_loading_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainset = write_trainset(tmp_path / "ts", count=0)
    argv = ["--profile", "smoke", "--trainset", str(trainset), "--models", str(tmp_path / "ts"), "--lora", str(tmp_path / "out")]
    assert train_main(argv) == 2
    assert "lists no images" in capsys.readouterr().err


def test_fp16_mixed_on_cpu_is_refused(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--profile",
        "smoke",
        "--trainset",
        str(tiny_trainset),
        "--models",
        str(tiny_models),
        "--lora",
        str(tmp_path / "o"),
        "--train.precision",
        "16-mixed",
    ]
    assert train_main(argv) == 2
    assert "16-mixed needs a GPU" in capsys.readouterr().err
