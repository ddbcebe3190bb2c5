"""The local runner end to end on small templates whose steps are `python -c` one-liners."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kolora_core.errors import KoloraError
from kolora_core.runner.local import RunOptions, failure_report, run_workflow
from kolora_core.runner.summary import build_summary
from kolora_core.storage.s3 import S3Store

from .conftest import TEMPLATES


def phases(result: Any) -> dict[str, str]:
    return {n.node: n.phase for n in result.nodes}


def test_dag_passes_artifacts_through_s3_under_the_run_prefix(run: Any, store: S3Store) -> None:
    result, console = run("pipeline.yaml")
    assert result.ok, console
    assert phases(result) == {n: "Succeeded" for n in ("produce", "transform", "report", "publish", "announce", "cleanup")}
    rid = result.run_id
    assert rid.startswith("mini-") and len(rid.split("-")) == 4
    keys = store.list_keys("")
    assert all(k.startswith(f"{rid}/") for k in keys)
    # default keys: <run-id>/<node>/<artifact>[.tgz]; archive none = one object per file
    assert f"{rid}/produce/data.tgz" in keys
    assert {f"{rid}/transform/data/greeting.txt", f"{rid}/transform/data/n.txt"} <= set(keys)
    assert f"{rid}/report/report.tgz" in keys
    # downstream steps saw the upstream files (only through S3: their scratch dirs are separate)
    report = json.loads((result.run_dir / "report" / "report" / "report.json").read_text())
    assert report == {"greeting": "HELLO", "n": 3, "profile": "full"}
    assert result.node("report").parameters == {"gate": "passed"}
    assert result.node("publish").parameters["url"] == "s3://published/_SUCCESS,gate.txt,report.json"
    assert "[announce] announce s3://published/" in console
    # logs per node; scratch dirs removed after success
    assert "produced" in (result.run_dir / "logs" / "produce.log").read_text()
    assert not (result.run_dir / ".work").exists()


def test_outputs_summary_and_flattening(run: Any) -> None:
    result, console = run("pipeline.yaml")
    run_dir = result.run_dir
    assert (run_dir / "produce" / "data" / "sub" / "n.txt").read_text() == "3"  # archived dir, unpacked
    assert (run_dir / "transform" / "data" / "greeting.txt").read_text() == "HELLO"
    # kolora.dev/summary-artifacts: report/report -> its files directly in runs/<id>/, minus the _SUCCESS marker
    assert json.loads((run_dir / "report.json").read_text())["greeting"] == "HELLO"
    assert (run_dir / "gate.txt").read_text() == "passed\n"
    assert not (run_dir / "_SUCCESS").exists()
    summary = (run_dir / "summary.txt").read_text()
    assert summary in console
    assert f"kolora run {result.run_id}: Succeeded" in summary
    assert "report.gate = passed" in summary and "report.json" in summary
    assert len(summary.splitlines()) <= 30
    assert (run_dir.parent / "latest").resolve() == run_dir


def test_parameters_overrides_and_errors(run: Any) -> None:
    result, _ = run("pipeline.yaml", parameters={"greeting": "salut", "profile": "smoke"})
    assert json.loads((result.run_dir / "report.json").read_text())["greeting"] == "SALUT"
    assert "greeting=salut" in result.summary and "profile=smoke" in result.summary
    with pytest.raises(KoloraError, match=r"unknown parameter 'greting' for mini: did you mean greeting\?$"):
        run("pipeline.yaml", parameters={"greting": "x"})
    with pytest.raises(KoloraError, match=r"unknown parameter 'zzzq' for mini: its parameters: greeting, threshold, profile$"):
        run("pipeline.yaml", parameters={"zzzq": "x"})
    with pytest.raises(KoloraError, match="allowed: smoke, full"):
        run("pipeline.yaml", parameters={"profile": "huge"})
    # soft parameters (the CLI's default profile) apply only where the template declares them
    result, _ = run("failing.yaml", soft_parameters={"profile": "smoke"})
    assert result.parameters == {}


def test_when_false_skips_and_argo_depends_rules_decide_the_dependents(run: Any) -> None:
    result, console = run("pipeline.yaml", parameters={"threshold": "5"})
    assert result.ok
    assert result.node("report").parameters == {"gate": "failed"}
    got = phases(result)
    assert got["publish"] == "Skipped"
    assert "when 'failed == passed' evaluated false" in result.node("publish").message
    assert result.node("publish").parameters == {"url": "none"}  # valueFrom.default of a skipped node
    assert got["announce"] == "Omitted"  # depends: publish.Succeeded
    assert got["cleanup"] == "Succeeded"  # depends: publish (= Succeeded || Skipped), as in Argo
    assert "[cleanup] announce none" in console
    assert "Skipped" in result.summary and "Omitted" in result.summary


def test_fan_out_items_sequences_params_and_key_only_artifacts(run: Any, store: S3Store) -> None:
    result, console = run("fanout.yaml")
    assert result.ok, console
    rid = result.run_id
    got = phases(result)
    assert [got[f"shard.{i}"] for i in range(3)] == ["Succeeded"] * 3
    assert [got[f"letters.{i}"] for i in range(3)] == ["Succeeded", "Skipped", "Succeeded"]
    assert result.node("letters.1").display == "letters(1:b)"
    # key-only outputs at the keys the template chose; gather read the whole prefix as one directory
    assert {f"{rid}/parts/shard-{i}/value.txt" for i in range(3)} <= set(store.list_keys(f"{rid}/parts/"))
    assert result.node("gather").parameters["total"] == "shard-0,shard-1,shard-2:3"
    assert [result.node(f"pairs.{i}").parameters["text"] for i in range(2)] == ["x=1", "y=2"]
    # a fanned-out task's output parameter is the JSON list of its values; withParam fans out over it
    assert result.node("listing").parameters["items"] == json.dumps(["LETTER-A", "LETTER-C"])
    assert [result.node(f"per-entry.{i}").parameters["text"] for i in range(2)] == ["entry LETTER-A", "entry LETTER-C"]
    assert [result.node(f"range.{i}").parameters["text"] for i in range(2)] == ["r05", "r06"]
    assert (result.run_dir / "shard.2" / "part" / "value.txt").read_text() == "2"


def test_sequence_count_follows_a_parameter(run: Any) -> None:
    result, _ = run("fanout.yaml", parameters={"shards": "1"})
    assert result.node("gather").parameters["total"] == "shard-0:0"


def test_raw_artifacts_results_scripts_optional_inputs_and_retries(run: Any, store: S3Store) -> None:
    result, console = run("misc.yaml", parameters={"config": "seed: 11"})
    assert result.ok, console
    line = f"seed: 11 | from the task | {result.run_dir}/.work/configured/outputs | unset"
    assert result.node("configured").result == line
    assert result.node("scripted").parameters["said"] == line.upper()
    # each attempt is a new pod: an empty /kolora, filled only with what the failed attempt uploaded
    assert "[flaky] attempt 1 saw []" in console and "[flaky] attempt 2 saw ['state']" in console
    assert "exit 1; retry 1/2" in console and "uploaded the failed attempt's outputs, as Argo does: state (1 object)" in console
    assert sorted(store.list_keys(f"{result.run_id}/flaky-state/")) == [
        f"{result.run_id}/flaky-state/attempt-1",
        f"{result.run_id}/flaky-state/attempt-2",
    ]


def test_secret_refs_resolve_from_the_secrets_map(run: Any) -> None:
    result, _ = run("misc.yaml", secrets={"hub": {"token": "from-the-map"}})
    assert result.node("configured").result.endswith("| from-the-map")


def test_failed_attempts_upload_nothing_when_asked_not_to(run: Any, store: S3Store) -> None:
    result, console = run("misc.yaml", upload_failed_outputs=False)
    assert not result.ok and result.failed is not None and result.failed.node == "flaky"
    assert "[flaky] attempt 1 saw []" in console and "[flaky] attempt 2 saw ['state']" not in console


def test_a_failing_step_stops_the_run_with_its_name(run: Any) -> None:
    result, _ = run("failing.yaml")
    assert not result.ok
    assert result.failed is not None and result.failed.node == "broken"
    assert phases(result) == {"first": "Succeeded", "broken": "Failed"}  # `after` and later tasks never ran
    report = failure_report(result)
    head, *tail = report.splitlines()
    assert head == "kolora run: step broken failed (exit 3); last lines of its log:"
    assert tail[-1].strip() == "kolora broken: error: the input is bad"
    assert len(tail) <= 21 and "working 29" in report and "working 0" not in report
    assert "FAILED at step broken" in result.summary and "Failed" in (result.run_dir / "summary.txt").read_text()
    assert (result.run_dir / ".work" / "broken").is_dir()  # kept for debugging


def test_a_step_whose_outputs_the_store_refuses_is_failed_not_pending(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container exited 0, then its upload failed: the summary shows the step Failed, how long it ran and why."""
    upload = S3Store.upload

    def refusing(self: S3Store, source: Path, key: str, *, archive: bool) -> list[str]:
        if "/transform/" in key:
            raise KoloraError(f"{self.settings.label} failed to upload {key}: InternalError simulated")
        return upload(self, source, key, archive=archive)

    monkeypatch.setattr(S3Store, "upload", refusing)
    with pytest.raises(KoloraError, match="InternalError simulated"):
        run("pipeline.yaml")
    summary = (tmp_path / "runs" / "latest" / "summary.txt").read_text()
    assert "Pending" not in summary and re.search(r"produce\s+Succeeded", summary), summary
    line = next(line for line in summary.splitlines() if line.strip().startswith("transform"))
    assert re.match(r"\s+transform\s+Failed\s+\d+\.\ds\s+\(S3 endpoint .* failed to upload", line), line
    assert "InternalError simulated" in summary.split("ERROR ", 1)[1]
    assert "was not produced by this run" not in summary, "no warning about outputs a failed run never reached"


def test_unknown_variable_fails_naming_task_and_variable(run: Any) -> None:
    with pytest.raises(KoloraError) as err:
        run("unknown_var.yaml")
    assert str(err.value) == "task 'second': unknown variable '{{workflow.parameters.stpes}}'"
    assert "kolora run unknown-var-" in run.console and "Failed" in run.console


def test_second_run_in_the_same_runs_dir(run: Any, tmp_path: Path) -> None:
    first, _ = run("pipeline.yaml")
    second, _ = run("pipeline.yaml", parameters={"greeting": "again"})
    assert first.ok and second.ok and first.run_id != second.run_id
    assert (tmp_path / "runs" / "latest").resolve() == second.run_dir
    assert json.loads((first.run_dir / "report.json").read_text())["greeting"] == "HELLO"
    assert json.loads((second.run_dir / "report.json").read_text())["greeting"] == "AGAIN"


def test_embedded_store_default_runs_twice_and_keeps_work_on_request(tmp_path: Path) -> None:
    import io

    for keep in (False, True):
        options = RunOptions(
            template=TEMPLATES / "pipeline.yaml", runs_dir=tmp_path / "runs", keep_work=keep, console=io.StringIO()
        )
        result = run_workflow(options)
        assert result.ok and "embedded" in result.store
        assert (result.run_dir / ".work").exists() is keep


def test_artifacts_over_the_collect_limit_stay_in_the_store(run: Any, store: S3Store) -> None:
    result, _ = run("pipeline.yaml", collect_max_bytes=4)
    assert result.ok
    assert not (result.run_dir / "transform" / "data").exists()
    left = [w for w in result.warnings if "transform/data" in w]
    assert left and "left in the store at s3://" in left[0]
    key = left[0].split(f"s3://{store.bucket}/", 1)[1].split(":", 1)[0]
    assert store.size(key) > 4


def test_a_required_secret_the_runner_does_not_have_is_an_error(run: Any, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "needs-secret"},
        "spec": {
            "entrypoint": "step",
            "templates": [
                {
                    "name": "step",
                    "container": {
                        "image": "kolora/test",
                        "command": ["python", "-c", "print('never')"],
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}}],
                    },
                }
            ],
        },
    }
    template = tmp_path / "needs-secret.yaml"
    template.write_text(yaml.safe_dump(doc))
    with pytest.raises(KoloraError, match="env TOKEN needs key 'token' of Secret 'hub', which kolora run does not have"):
        run(str(template))
    assert "never" not in run.console


def test_a_workflow_naming_its_summary_artifacts_shows_only_those(run: Any) -> None:
    """An unchanged nightly runs no evaluate: its summary must not pass off another output's report as the run's."""
    result, _ = run("pipeline.yaml", parameters={"threshold": "5"})
    assert "\nreport  " in result.summary  # report/report was produced and flattened
    (result.run_dir / "report.json").unlink()
    (result.run_dir / "produce" / "elsewhere").mkdir()
    (result.run_dir / "produce" / "elsewhere" / "report.json").write_text('{"gate": "passed"}')
    assert "\nreport  " not in build_summary(result) and result.flattened
