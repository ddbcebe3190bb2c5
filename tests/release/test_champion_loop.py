"""The promotion loop through the real stage CLIs, tiny models and a real S3 server, run twice on the same data.

First run: no champion -> check-changes `changed` -> train -> generate -> evaluate (absolute gate only) ->
publish -> promote. Second run: the champion is the first run's release -> check-changes `unchanged`; trained
anyway (what a manual run does), the LoRA is byte-identical, evaluate compares the same story with the same
scorers (scores read from the champion's report), passes, and promoting it is a no-op on the same version.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.check_changes import main as check_changes
from jobs.evaluate import main as evaluate
from jobs.generate import main as generate
from jobs.publish import main as publish
from jobs.train import main as train
from kolora_core.cli import main as kolora
from kolora_core.config import load_config
from kolora_core.lora.format import LORA_FILE, sha256_of
from kolora_core.models.fetch import fetch_scorers
from kolora_core.release.publish import LATEST
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from tests.conftest import mark_complete

SMOKE = ["--profile", "smoke"]


def _round(root: Path, store: S3Store, trainset: Path, models: Path, scorers: Path, filter_report: Path) -> dict[str, Path]:
    endpoint = ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    d = {name: root / name for name in ("champion", "changes", "lora", "images", "report", "release")}
    assert kolora(["champion", *endpoint, "--name", "kolora", "--out", str(d["champion"])]) == 0
    changes = ["--trainset", str(trainset), "--champion", str(d["champion"]), "--changes", str(d["changes"])]
    assert check_changes([*SMOKE, *changes]) == 0
    assert train([*SMOKE, "--trainset", str(trainset), "--models", str(models), "--lora", str(d["lora"])]) == 0
    assert generate([*SMOKE, "--models", str(models), "--lora", str(d["lora"]), "--images", str(d["images"])]) == 0
    inputs = ["--images", str(d["images"]), "--lora", str(d["lora"]), "--filter-report", str(filter_report)]
    inputs += ["--scorers", str(scorers), "--champion", str(d["champion"])]  # smoke: tiny random scorers, a bar they pass
    assert evaluate([*SMOKE, *inputs, "--report", str(d["report"])]) == 0
    released = ["--lora", str(d["lora"]), "--report", str(d["report"]), "--images", str(d["images"])]
    assert publish([*SMOKE, *released, "--release", str(d["release"])]) == 0
    assert kolora(["publish", "--release", str(d["release"]), *endpoint]) == 0
    return d


@pytest.mark.slow
def test_twice_on_the_same_data(
    store: S3Store, tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")
    config = load_config("smoke")
    scorers = tmp_path / "scorers"
    fetch_scorers(config.evaluate, config.models, scorers)
    mark_complete(scorers)
    filter_report = tmp_path / "filter-report"
    filter_report.mkdir()
    (filter_report / "filter_report.json").write_text(json.dumps({"images_in": 4, "kept": 4, "dropped": 0}))
    mark_complete(filter_report)

    first = _round(tmp_path / "one", store, tiny_trainset, tiny_models, scorers, filter_report)
    assert (first["changes"] / "training.txt").read_text() == "changed\n"
    report = json.loads((first["report"] / "report.json").read_text())
    assert report["champion"]["status"] == "none" and report["gate"]["result"] == "passed"
    version = json.loads((first["release"] / "release.json").read_text())["version"]
    storage = S3StoreStorage(store)
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == version

    second = _round(tmp_path / "two", store, tiny_trainset, tiny_models, scorers, filter_report)
    changes = json.loads((second["changes"] / "changes.json").read_text())
    assert changes["training"] == "unchanged", changes["reason"]
    assert sha256_of(second["lora"] / LORA_FILE) == sha256_of(first["lora"] / LORA_FILE)
    report = json.loads((second["report"] / "report.json").read_text())
    champion = report["champion"]
    assert (champion["status"], champion["version"], champion["comparable"], champion["scores_from"]) == (
        "found", version, True, "report",
    )  # fmt: skip
    assert report["gate"]["result"] == "passed" and f"champion {version}'s" in report["gate"]["reason"]
    assert json.loads((second["release"] / "release.json").read_text())["version"] == version
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == version
