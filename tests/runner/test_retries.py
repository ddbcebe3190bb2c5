"""Issue 11's acceptance: a train and a generate attempt that fail once, then succeed, on the real stages (smoke
profile, retries.yaml), end with a correct evaluate and a store holding only what succeeded.

The local runner treats each attempt as Argo treats a pod: a fresh, empty /kolora, inputs downloaded again,
and the failed attempt's output paths uploaded (keys only added). So what this test sees is what a cluster
sees: the retry learns about the failed attempt only through the store (checkpoints, kept images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kolora_core.inference.run import CRASH_ENV as GENERATE_CRASH
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from kolora_core.training.run import CRASH_ENV as TRAIN_CRASH

PIPELINE = Path(__file__).resolve().parents[2] / "workflows" / "dist" / "kolora-pipeline.yaml"


def _committed(store: S3Store, prefix: str) -> set[str]:
    """The keys a committed directory at `prefix` consists of: its files (from its _SUCCESS) and the marker."""
    body = S3StoreStorage(store).get(f"{prefix}/{COMPLETE_MARKER}")
    return {f"{prefix}/{name}" for name in json.loads(body)["files"]} | {f"{prefix}/{COMPLETE_MARKER}"}


def test_failed_attempts_leave_a_clean_store_and_a_correct_evaluate(run: Any, store: S3Store) -> None:
    result, console = run("retries.yaml")
    assert result.ok, console
    rid = result.run_id
    logs = result.run_dir / "logs"

    # train failed right after its step-2 checkpoint; the retry, in a fresh pod, resumed from the uploaded state
    train_log = (logs / "train.log").read_text()
    assert "simulated crash after step 2" in train_log and "exit 1; retry 1/2" in train_log
    # the failed attempt's lora/ was empty (staging lives beside it), so only its checkpoint reached the store
    assert "uploaded the failed attempt's outputs, as Argo does: lora (0 objects), checkpoints (1 object)" in train_log
    summary = json.loads((result.run_dir / "train" / "lora" / "train_summary.json").read_text())
    assert summary["resumed_from"] == "step 2"
    # generate shard 1 failed right after keeping story image 1; its retry rendered only the other three
    shard_log = (logs / "generate.1.log").read_text()
    assert "simulated crash after story image 1" in shard_log
    assert "uploaded the failed attempt's outputs, as Argo does: images (0 objects), progress (2 objects)" in shard_log
    assert "(1 finished by an earlier attempt)" in shard_log and "image 3/3 (story #7" in shard_log
    assert "finished by an earlier attempt" not in (logs / "generate.0.log").read_text().replace("(0 finished", "")

    # evaluate read only the committed files: the junk planted beside shard 1 was removed first, one line
    evaluate_log = (logs / "evaluate.log").read_text()
    removed = [line for line in evaluate_log.splitlines() if "input --images: removed" in line]
    assert len(removed) == 1 and removed[0].endswith("shard-1/.partial/generations.jsonl, shard-1/009.png")
    report = json.loads((result.run_dir / "evaluate" / "report" / "report.json").read_text())
    assert [image["index"] for image in report["images"]] == list(range(8))

    # the store: every key under the run prefix is a committed file, a resumable state, or the planted junk
    keys = set(store.list_keys(f"{rid}/"))
    planted = {f"{rid}/images/shard-1/.partial/generations.jsonl", f"{rid}/images/shard-1/009.png"}
    outputs = ("dataset", "trainset", "filter-report", "champion", "models", "scorers", "lora", "report")
    committed = set().union(
        *(_committed(store, f"{rid}/{name}") for name in outputs),
        *(_committed(store, f"{rid}/images/shard-{i}") for i in (0, 1)),
    )
    resumable = {k for k in keys if k.startswith((f"{rid}/train-checkpoints/", f"{rid}/generate-progress/"))}
    assert keys == committed | planted | resumable
    assert not any("/.partial/" in k or "/.staging/" in k for k in keys - planted)
    # the failed attempts' uploads really happened (and only the resumable outputs had anything to upload)
    assert {k.rsplit("/", 1)[1] for k in resumable if "/train-checkpoints/" in k} == {"step-00000002.safetensors"}
    assert {k.rsplit("/", 1)[1] for k in resumable if "/generate-progress/shard-1/" in k} == {"001.png", "001.json"}
    assert not any("/generate-progress/shard-0/" in k for k in resumable), "shard 0 never failed"


def test_the_rendered_pipeline_promotes_through_failed_attempts(
    run: Any, store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workflows/dist/kolora-pipeline.yaml itself (what `make run` runs), two shards, the same two failures."""
    monkeypatch.setenv(TRAIN_CRASH, "2")
    monkeypatch.setenv(GENERATE_CRASH, "1")
    result, console = run(str(PIPELINE), parameters={"profile": "smoke", "generate-shards": "2"})
    assert result.ok, console
    phases = {n.node: n.phase for n in result.nodes}
    assert set(phases.values()) == {"Succeeded"} and {"champion", "check-changes", "promote", "onExit"} <= set(phases)
    assert "retry 1/2" in (result.run_dir / "logs" / "train.log").read_text()
    assert "(1 finished by an earlier attempt)" in (result.run_dir / "logs" / "generate.1.log").read_text()
    assert f"promoted published s3://{store.bucket}/models/kolora/" in result.summary
    keys = store.list_keys("")
    assert not any("/.partial/" in k or "/.staging/" in k for k in keys)
    assert any(k.startswith(f"{result.run_id}/train-checkpoints/") for k in keys), "the failed attempt's upload"
