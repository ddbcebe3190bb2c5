"""A damaged champion in `kolora run`'s own embedded store: the run stops at the champion step with advice that works.

The user trial: a release whose image was changed (or whose release.json is gone) failed every later run at
the champion step, advising "republish that version", which `kolora publish` (then: --s3-endpoint required)
could not do against the store under --runs-dir. Here the champion template of workflows/dist/kolora-pipeline.yaml
(what a cluster runs) is run by the local runner on the embedded store (`s3=None`, as `kolora run` does), the
command its error prints is run as printed, and the next run passes the champion step.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from kolora_core.cli import main as kolora
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.publish import publish_release
from kolora_core.runner.local import RunOptions, failure_report, run_workflow
from kolora_core.runner.records import RunResult
from kolora_core.storage.address import STORE_FLAGS_ENV
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from tests.release.test_publish_race import _evaluated_against
from tests.release.test_release import _release

PIPELINE = Path(__file__).resolve().parents[2] / "workflows" / "dist" / "kolora-pipeline.yaml"
COMMAND = re.compile(r"`(kolora (?:publish --rollback|champion --reset) [^`]*)`")


def _champion_only(tmp_path: Path) -> Path:
    """The dist pipeline's own champion template as the only task (the rest of the spec unchanged)."""
    spec = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))
    champion = next(t for t in spec["spec"]["templates"] if t["name"] == "champion")
    champion["retryStrategy"]["limit"] = 0  # a damaged champion fails every attempt alike: one is enough to read
    spec["spec"]["templates"] = [{"name": "main", "dag": {"tasks": [{"name": "champion", "template": "champion"}]}}, champion]
    spec["spec"]["entrypoint"] = "main"
    spec["spec"].pop("onExit", None)
    path = tmp_path / "champion-only.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _local_run(template: Path, runs: Path) -> tuple[RunResult, str]:
    """`kolora run --runs-dir runs --template ...`: the embedded store in runs/.store, started for the run."""
    console = io.StringIO()
    options = RunOptions(template=template, parameters={"profile": "smoke"}, runs_dir=runs, console=console)
    return run_workflow(options), console.getvalue()


def _champion_json(result: RunResult) -> dict:
    return json.loads((result.run_dir / "champion" / "champion" / "champion.json").read_text(encoding="utf-8"))


def _advised(result: RunResult) -> list[str]:
    """The fix commands the failed champion step printed, as the user would copy them."""
    return COMMAND.findall(failure_report(result))


def test_a_tampered_champion_stops_the_run_and_the_advised_rollback_gets_it_going(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:  # two releases published by earlier runs; v2 replaced v1
        storage = S3StoreStorage(S3Store(settings))
        publish_release(storage, _release(tmp_path, "one", fill=0.0, version="v1"))
        publish_release(
            storage, _evaluated_against(_release(tmp_path, "two", fill=1.0, version="v2"), {"status": "found", "version": "v1"})
        )
        storage.put("models/kolora/v2/images/000.png", b"changed after it was published")
    template = _champion_only(tmp_path)

    result, console = _local_run(template, runs)
    assert not result.ok and result.failed is not None and result.failed.node == "champion", console
    report = failure_report(result)
    assert (
        "kolora champion: error: the champion kolora v2 is damaged: models/kolora/v2/images/000.png does not match "
        "its sha256 in release.json: the release was changed after it was published." in report
    )
    rollback, reset = _advised(result)
    assert rollback == f"kolora publish --rollback v1 --name kolora --runs-dir {runs}"
    assert reset == f"kolora champion --reset --name kolora --runs-dir {runs}"
    assert "127.0.0.1" not in report, "the run's own port is gone when the user reads this"

    assert kolora(shlex.split(rollback)[1:]) == 0  # as printed, against the same embedded store

    result, console = _local_run(template, runs)
    assert result.ok, console
    champion = _champion_json(result)
    assert (champion["status"], champion["version"]) == ("found", "v1")


def test_an_unfinished_only_release_is_cleared_by_the_advised_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:
        store = S3Store(settings)
        publish_release(S3StoreStorage(store), _release(tmp_path, "one", version="v1"))
        store.delete_keys([f"models/kolora/v1/{RELEASE_MANIFEST}"])
    template = _champion_only(tmp_path)

    result, console = _local_run(template, runs)
    assert not result.ok, console
    assert "the champion kolora v1 is damaged: models/kolora/v1/release.json is missing" in failure_report(result)
    assert f"`kolora publish --release DIR --runs-dir {runs}`" in failure_report(result)
    (reset,) = _advised(result)  # no other version to roll back to
    assert kolora(shlex.split(reset)[1:]) == 0
    assert "kolora champion: cleared models/kolora/latest.json (it pointed at v1)" in capsys.readouterr().out

    result, console = _local_run(template, runs)
    assert result.ok, console
    assert _champion_json(result)["status"] == "none"
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:  # nothing published was deleted
        assert S3Store(settings).exists("models/kolora/v1/claim.json")


def test_the_steps_are_told_the_store_flags_only_for_the_embedded_store(tmp_path: Path) -> None:
    from kolora_core.runner.local import store_flags_env
    from kolora_core.storage.s3 import S3Settings

    embedded = S3Settings(endpoint_url="http://127.0.0.1:1", bucket="kolora", embedded=True)
    runs = Path("my runs")
    assert store_flags_env(RunOptions(runs_dir=runs), embedded) == {STORE_FLAGS_ENV: "--runs-dir 'my runs'"}
    other_bucket = RunOptions(runs_dir=runs, parameters={"s3-bucket": "team"})
    assert store_flags_env(other_bucket, embedded) == {STORE_FLAGS_ENV: "--runs-dir 'my runs' --bucket team"}
    assert store_flags_env(RunOptions(runs_dir=runs, parameters={"s3-endpoint": "http://minio:9000"}), embedded) == {}
    assert store_flags_env(RunOptions(runs_dir=runs, store_dir=tmp_path / "elsewhere"), embedded) == {}
    assert store_flags_env(RunOptions(runs_dir=runs), S3Settings(endpoint_url="http://minio:9000")) == {}
