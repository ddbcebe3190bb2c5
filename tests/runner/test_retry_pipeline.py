"""The rendered pipeline (workflows/dist/kolora-pipeline.yaml, smoke profile) stopped by Ctrl-C during train, then
`kolora run --retry`: the steps that succeeded are kept, train resumes from the checkpoint it wrote at the runner's
SIGTERM (the only one: periodic checkpoints are off), and the LoRA equals an uninterrupted run's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kolora_core.cli import main
from kolora_core.runner.run_record import RECORD_FILE
from kolora_core.storage.s3 import S3Store
from tests.runner.conftest import REPO, ctrl_c_when_logged
from tests.training.helpers import LOSS_CSV_TOLERANCE, lora_max_diff, losses

PIPELINE = REPO / "workflows" / "dist" / "kolora-pipeline.yaml"
STEPS = 12
CONFIG = json.dumps({"train": {"steps": STEPS, "log_every": 1, "checkpoint_every": 0}})
BEFORE_TRAIN = ("ingest", "filter", "champion", "check-changes", "fetch-models")
AFTER_TRAIN = ("generate", "evaluate", "publish", "promote")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_credentials")]


def _interrupt_during_train(store: S3Store, runs: Path) -> Path:
    """A real `kolora run`, Ctrl-C once train has logged step 3; returns the run's directory."""
    parameters = {"profile": "smoke", "config": CONFIG}
    logged = rf"step 3/{STEPS} loss"
    run_dir, err = ctrl_c_when_logged(store, runs, PIPELINE, parameters, "train", logged, reach_s=300, stop_s=120)
    go_on = "; `kolora run --retry` goes on from what it saved"
    assert err.strip().splitlines()[-1] == f"kolora run: interrupted; the running step was stopped{go_on}"
    return run_dir


def test_a_run_stopped_in_train_and_retried_ends_with_the_uninterrupted_lora(run: Any, store: S3Store, tmp_path: Path) -> None:
    reference, console = run(str(PIPELINE), parameters={"profile": "smoke", "config": CONFIG})
    assert reference.ok, console

    runs = tmp_path / "stopped"
    run_dir = _interrupt_during_train(store, runs)
    rid = run_dir.name
    train_log = (run_dir / "logs" / "train.log").read_text()
    stopped_at = int(re.findall(r"SIGTERM: stopped after step (\d+), checkpoint in", train_log)[0])
    assert 3 <= stopped_at < STEPS
    assert "uploaded the stopped step's outputs, as Argo does:" in train_log and "checkpoints (1 object)" in train_log
    assert [k.rsplit("/", 1)[1] for k in store.list_keys(f"{rid}/train-checkpoints/")] == [f"step-{stopped_at:08d}.safetensors"]
    assert json.loads((run_dir / RECORD_FILE).read_text())["status"] == "Failed"
    kept_logs = {name: (run_dir / "logs" / f"{name}.log").read_text() for name in BEFORE_TRAIN}

    assert main(["run", "--retry", "--runs-dir", str(runs)]) == 0
    record = json.loads((run_dir / RECORD_FILE).read_text())
    assert record["status"] == "Succeeded" and record["retries"] == 1
    nodes = {n["node"]: n for n in record["nodes"]}
    assert all(nodes[name]["reused"] and nodes[name]["phase"] == "Succeeded" for name in BEFORE_TRAIN)
    assert all((run_dir / "logs" / f"{name}.log").read_text() == kept_logs[name] for name in BEFORE_TRAIN), "not rerun"
    assert not nodes["train"]["reused"] and nodes["train"]["attempts"] == 2
    assert all(nodes[name]["phase"] == "Succeeded" for name in ("train", "generate.0", *AFTER_TRAIN[1:], "onExit"))

    summary = json.loads((run_dir / "train" / "lora" / "train_summary.json").read_text())
    assert summary["resumed_from"] == f"step {stopped_at}"
    lora, uninterrupted = run_dir / "train" / "lora", reference.run_dir / "train" / "lora"
    assert lora_max_diff(lora, uninterrupted) <= 1e-6
    assert losses(lora) == pytest.approx(losses(uninterrupted), abs=LOSS_CSV_TOLERANCE)
    text = (run_dir / "summary.txt").read_text()
    head = rf"kolora run {rid}: Succeeded in \S+ \(retry 1; \S+ with the first attempt's steps\)"
    assert re.fullmatch(head, text.splitlines()[0]), text
    assert nodes["train"]["before"] > 0 and re.search(r"\n  train\s+Succeeded\s+\S+  \(\+\S+ before the retry\)\n", text)
    assert text.count("(succeeded before the retry; kept)") == len(BEFORE_TRAIN)
