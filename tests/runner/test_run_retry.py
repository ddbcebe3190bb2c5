"""`kolora run --retry`: a failed or interrupted run rerun in place, as `argo retry` does, on python -c steps
(resumable.yaml); the real pipeline interrupted in train is tests/runner/test_retry_pipeline.py."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kolora_core.cli import main
from kolora_core.config import loader
from kolora_core.errors import KoloraError
from kolora_core.runner.collect import drop_abandoned
from kolora_core.runner.local import RunOptions, resolve_parameters, run_workflow
from kolora_core.runner.records import RunResult
from kolora_core.runner.refusal import ValueAdvice
from kolora_core.runner.retry import plan_retry
from kolora_core.runner.run_record import RECORD_FILE, run_lock
from kolora_core.runner.spec import ParamSpec, WorkflowSpec
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import S3Store

from .conftest import TEMPLATES

pytestmark = pytest.mark.usefixtures("store_credentials")  # steps reach the store with the keys of the environment

REPO = Path(__file__).resolve().parents[2]
TOTAL = "6 items, sum 75"  # items 0..5 of base 10: what an uninterrupted run writes


def retry(run: Any, runs: Path, name: str | None = None, template: str = "resumable.yaml") -> tuple[RunResult, str]:
    """What `kolora run --retry [name]` does, in-process: the run's own parameters, the plan."""
    plan = plan_retry(runs, name)
    return run(template, parameters=plan.given_parameters(), soft_parameters=plan.other_parameters(), retry=plan)


def record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))


def test_a_failed_run_retried_keeps_what_succeeded_and_resumes_the_failed_step(run: Any, store: S3Store, tmp_path: Path) -> None:
    first, _ = run("resumable.yaml", parameters={"fail-at": "2"})
    assert not first.ok and first.failed is not None and first.failed.node == "work"
    rid = first.run_id
    assert record(first.run_dir)["status"] == "Failed"
    # what the failed attempt saved is in the store, where Argo's wait container would have put it
    assert [k.rsplit("/", 1)[1] for k in store.list_keys(f"{rid}/work-progress/")] == ["000.txt", "001.txt", "002.txt"]

    second, console = retry(run, tmp_path / "runs")
    assert second.ok, console
    assert (second.run_id, second.run_dir) == (rid, first.run_dir), "in place: the same id, keys and directory"
    produce, work = second.node("produce"), second.node("work")
    assert produce.reused and produce.phase == "Succeeded" and not work.reused
    assert "--- produce: succeeded before the retry; kept" in console
    logs = second.run_dir / "logs"
    assert (logs / "produce.log").read_text().count("produced") == 1, "produce did not run again"
    work_log = (logs / "work.log").read_text()
    assert "simulated failure after item 2" in work_log and "retry 1 of the run: work runs again (Failed before)" in work_log
    assert "resuming after 3 items" in work_log and "item 5 done" in work_log
    assert (second.run_dir / "total.txt").read_text() == TOTAL
    assert "status Succeeded count 6" in (logs / "onExit.log").read_text(), "the exit handler runs again, with the outcome"
    assert work.attempts == 2, "the retry's pod is the node's second: work-1"
    summary = (second.run_dir / "summary.txt").read_text()
    # the retry's own time, and the whole run's: its steps, the kept step's time and the failed attempts' time
    head = re.fullmatch(rf"kolora run {rid}: Succeeded in (\d+\.\d)s \(retry 1; (\d+\.\d)s with the first attempt's steps\)",
                        summary.splitlines()[0])  # fmt: skip
    assert head, summary
    reran = {"work": first.node("work").duration, "onExit": first.node("onExit").duration}
    assert {n: second.node(n).before for n in reran} == reran, "the first attempt's time on each step it reran"
    assert (second.node("total").before, produce.before, produce.duration) == (0, 0, first.node("produce").duration)
    whole = second.duration + produce.duration + sum(reran.values())
    assert head.groups() == (f"{second.duration:.1f}", f"{whole:.1f}"), summary
    assert re.search(r"produce\s+Succeeded\s+\d+\.\ds\s+\(succeeded before the retry; kept\)", summary), summary
    assert re.search(rf"work\s+Succeeded\s+\d+\.\ds\s+\(\+{reran['work']:.1f}s before the retry\)", summary), summary
    recorded = {node["node"]: node["before"] for node in record(second.run_dir)["nodes"]}
    assert recorded["work"] == reran["work"], "in run.json, for a second retry to add to"
    done = record(second.run_dir)
    assert done["status"] == "Succeeded" and done["retries"] == 1

    with pytest.raises(KoloraError, match=rf"^cannot retry {rid}: it succeeded, there is nothing to rerun$"):
        plan_retry(tmp_path / "runs", rid)


def test_a_kept_step_whose_outputs_left_the_store_runs_again(run: Any, store: S3Store, tmp_path: Path) -> None:
    first, _ = run("resumable.yaml", parameters={"fail-at": "0"})
    store.delete_prefix(f"{first.run_id}/data/")
    second, console = retry(run, tmp_path / "runs", first.run_id)
    assert second.ok, console
    assert "--- produce: succeeded before, but its output 'data' is no longer in the store: running it again" in console
    assert not second.node("produce").reused and (second.run_dir / "logs" / "produce.log").read_text().count("produced") == 2


def test_retry_without_a_run_takes_the_run_that_failed_last(run: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(KoloraError, match=rf"^cannot retry: no failed or interrupted run under {runs}/"):
        plan_retry(runs, None)
    older, _ = run("resumable.yaml", parameters={"fail-at": "1"})
    newer, _ = run("resumable.yaml", parameters={"fail-at": "4"})
    run("resumable.yaml")  # succeeded: never a candidate
    assert plan_retry(runs, None).run_id == newer.run_id
    assert plan_retry(runs, str(older.run_dir)).run_id == older.run_id  # a run's directory names it too
    retry(run, runs)  # the newer one, which succeeds now
    assert plan_retry(runs, None).run_id == older.run_id


def test_what_cannot_be_retried_is_refused_in_one_line(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(KoloraError, match=r"^cannot retry nope: no run 'nope' under .*runs/ \(give a run id"):
        plan_retry(runs, "nope")
    (runs / "by-hand" / "logs").mkdir(parents=True)
    with pytest.raises(KoloraError, match=r"^cannot retry by-hand: .*run\.json does not exist \(not a run directory"):
        plan_retry(runs, "by-hand")

    failed, _ = run("resumable.yaml", parameters={"fail-at": "1"})
    running = pytest.raises(KoloraError, match=rf"^cannot retry {failed.run_id}: it is running")
    with run_lock(failed.run_dir, failed.run_id), running:  # as a kolora run working on it holds it
        plan_retry(runs, failed.run_id)

    # the template: a copy the run read, edited after it
    template = tmp_path / "resumable.yaml"
    shutil.copy(TEMPLATES / "resumable.yaml", template)
    edited, _ = run(str(template), parameters={"fail-at": "1"})
    template.write_text(template.read_text().replace('value: "6"', 'value: "7"'))
    with pytest.raises(KoloraError, match=rf"^cannot retry {edited.run_id}: its template {template} changed since the run"):
        retry(run, runs, edited.run_id, template=str(template))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"retries": "1"}, "retries: Input should be a valid integer"),  # was a TypeError at `retries + 1`
        ({"parameters": []}, "parameters: Input should be an object"),  # was an AttributeError
        ({"template": 5}, "template: Input should be a valid string"),  # was a TypeError in os.fspath
        ({"nodes": [1]}, "nodes.0: Input should be an object"),  # was a TypeError building the nodes
        ({"store": {"embedded": "yes", "bucket": "kolora"}}, "store.embedded: Input should be a valid boolean"),
    ],
)
def test_a_record_not_as_kolora_writes_it_is_one_line(run: Any, tmp_path: Path, edit: dict[str, Any], reason: str) -> None:
    """A hand-edited run.json with a field of another type was a traceback (exit 1) from deep in the retry."""
    failed, _ = run("resumable.yaml", parameters={"fail-at": "1"})
    path, written = failed.run_dir / RECORD_FILE, record(failed.run_dir)
    path.write_text(json.dumps(written | edit), encoding="utf-8")
    with pytest.raises(KoloraError) as refused:
        plan_retry(tmp_path / "runs", failed.run_id)
    assert str(refused.value) == f"cannot retry {failed.run_id}: {path} is not a run record this kolora reads ({reason})"
    path.write_text(json.dumps(written | {"nodes": [written["nodes"][0] | {"phase": 7}]}), encoding="utf-8")
    with pytest.raises(KoloraError, match=r"\(nodes\.0\.phase: Input should be a valid string\)$"):
        plan_retry(tmp_path / "runs", failed.run_id)


def test_a_run_whose_embedded_store_is_gone_is_refused_and_no_store_is_made(tmp_path: Path) -> None:
    """A runs directory moved after a failed run: its retry started a new, empty store at the old path (the record's
    store_dir) and ran every step again against it, with no champion, instead of saying that the store is gone."""
    runs = tmp_path / "runs"
    failed = run_workflow(RunOptions(template=TEMPLATES / "resumable.yaml", runs_dir=runs, console=io.StringIO(),
                                     parameters={"fail-at": "1"}))  # fmt: skip
    moved = runs.rename(tmp_path / "moved")
    with pytest.raises(KoloraError) as refused:
        plan_retry(moved, failed.run_id)
    assert str(refused.value) == (
        f"cannot retry {failed.run_id}: its embedded store {runs.resolve() / STORE_DIRNAME} no longer exists (deleted, or "
        "its runs directory moved): start a new run (nothing was created)"
    )
    assert not runs.exists()


STAGE_LIKE = """\
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: staged}
spec:
  entrypoint: main
  arguments:
    parameters:
      - {name: profile, value: smoke}
      - {name: config, value: "{}"}
  templates:
    - name: main
      dag:
        tasks: [{name: stage, template: stage}]
    - name: stage
      inputs:
        artifacts: [{name: config, path: /kolora/inputs/config/run.yaml, raw: {data: "{{workflow.parameters.config}}"}}]
      container:
        image: kolora/test
        command: [python, -c, "import sys; sys.exit(3)"]
        args: [--profile, "{{workflow.parameters.profile}}", --config, /kolora/inputs/config/run.yaml]
"""


def test_a_config_that_resolves_differently_now_is_refused(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke profile edited between the run and its retry: the stage would run with other settings than the run's."""
    profiles = tmp_path / "profiles"
    shutil.copytree(loader.PROFILES_DIR, profiles)
    monkeypatch.setattr(loader, "PROFILES_DIR", profiles)
    template = tmp_path / "staged.yaml"
    template.write_text(STAGE_LIKE)
    failed, _ = run(str(template))
    assert not failed.ok and set(record(failed.run_dir)["configs"]) == {"stage"}
    smoke = profiles / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("  steps: 4\n", "  steps: 5\n"))
    with pytest.raises(KoloraError, match=rf"^cannot retry {failed.run_id}: the config that template 'stage' resolves changed"):
        retry(run, tmp_path / "runs", failed.run_id, template=str(template))


def test_the_cli_takes_the_run_from_its_record_and_refuses_what_would_change_it(
    run: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    failed, _ = run("resumable.yaml", parameters={"fail-at": "3"})
    assert main(["run", "--retry", failed.run_id, "--runs-dir", str(runs), "-p", "items=9"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "kolora run: error: --retry reruns a run with its own template, parameters, engine and store: leave out -p "
        "(a new run takes them)\n"
    )
    assert main(["run", "--retry", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert f"kolora run: {failed.run_id} (resumable, engine process, " in out and ", retry 1)" in out
    assert (failed.run_dir / "total.txt").read_text() == TOTAL
    assert main(["run", "--retry", failed.run_id, "--runs-dir", str(runs)]) == 2
    done = f"kolora run: error: cannot retry {failed.run_id}: it succeeded, there is nothing to rerun\n"
    assert capsys.readouterr().err == done


def test_a_run_the_checks_refuse_now_says_to_start_a_new_run(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Started by a kolora that took more -p generate-shards than the story has prompts, then failed: its retry was
    refused with "pass -p generate-shards=8 or fewer", which `kolora run --retry` refuses in turn (it takes no -p)."""
    template = tmp_path / "shards-then-fail.yaml"
    shards = (TEMPLATES / "shards.yaml").read_text(encoding="utf-8")
    template.write_text(
        shards.replace(
            "          - {name: generate, template: generate}\n",
            "          - {name: generate, template: generate}\n"
            "          - {name: fail, template: fail, dependencies: [generate]}\n",
        )
        + "    - name: fail\n      container: {image: kolora/test, command: [python, -c, 'raise SystemExit(1)']}\n",
        encoding="utf-8",
    )
    with monkeypatch.context() as older:  # the kolora that started the run had no shards check
        older.setattr("kolora_core.runner.local.check_generate_shards", lambda *args: None)
        failed, _ = run(str(template), parameters={"generate-shards": "9"})
    assert not failed.ok and failed.failed is not None and failed.failed.node == "fail"
    assert main(["run", "--retry", failed.run_id, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == (
        f"kolora run: error: cannot retry {failed.run_id}: -p generate-shards=9: the story has 8 prompts (profile smoke), "
        "so 1 of the 9 shards would render nothing (each a GPU pod that downloads the models first); a retry keeps the "
        "run's -p values and takes none: start a new run (`kolora run`) with -p generate-shards=8 or fewer\n"
    )


def _missing_value() -> KoloraError:
    """resolve_parameters' own refusal of a parameter without a value."""
    workflow = WorkflowSpec("resumable", "Workflow", "main", (ParamSpec("items"),), {})
    with pytest.raises(KoloraError) as refused:
        resolve_parameters(workflow, {})
    assert str(refused.value) == "parameter 'items' of resumable has no value: pass -p items=VALUE"  # as a new run says
    return refused.value


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (_missing_value, "parameter 'items' of resumable has no value"
         "; a retry keeps the run's -p values and takes none: start a new run (`kolora run`) with -p items=VALUE"),
        (lambda: KoloraError("-p items='x' (--train.steps) is refused before any step runs: train.steps: not an integer"),
         "-p items='x' (--train.steps) is refused before any step runs: train.steps: not an integer; a retry keeps the "
         "run's -p values and takes none: start a new run (`kolora run`) with -p values that pass"),
        # the advice is data: a check worded unlike the others still gives it, and only once
        (lambda: ValueAdvice("-p items=3 is too many for Tuesdays", "-p items=2 (or wait for Wednesday)", sep=" -- so "),
         "-p items=3 is too many for Tuesdays; a retry keeps the run's -p values and takes none: start a new run "
         "(`kolora run`) with -p items=2 (or wait for Wednesday)"),
    ],
)  # fmt: skip
def test_every_parameter_refusal_under_retry_points_to_a_new_run(run: Any, refusal: Any, said: str) -> None:
    """The local runner's and check_config_parameters' refusals (these forms) get the same way out."""
    failed, _ = run("resumable.yaml", parameters={"fail-at": "1"})
    plan = plan_retry(failed.run_dir.parent, failed.run_id)
    assert str(plan.refused(refusal())) == f"cannot retry {failed.run_id}: {said}"


def interrupt_work(store: S3Store, runs: Path, sig: signal.Signals, *params: str) -> tuple[int, str, Path]:
    """A real `kolora run` of resumable.yaml, sent `sig` once `work` has done item 1; returns its exit code, its stderr
    and the run's directory."""
    argv = [sys.executable, "-m", "kolora_core.cli", "run", "--template", str(TEMPLATES / "resumable.yaml")]
    argv += ["-p", "delay=0.3", "--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket, "--runs-dir", str(runs)]
    argv += [arg for param in params for arg in ("-p", param)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any("item 1 done" in log.read_text() for log in runs.glob("*/logs/work.log")):
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not reach work's item 1"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err, (runs / "latest").resolve()


STOPPED_LINES = {
    signal.SIGINT: "kolora run: interrupted; the running step was stopped",
    signal.SIGTERM: "kolora run: terminated (SIGTERM); the running step was stopped",
    signal.SIGHUP: "kolora run: hung up (SIGHUP: the terminal closed); the running step was stopped",
}
GO_ON = "; `kolora run --retry` goes on from what it saved"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupted_run_keeps_what_the_stopped_step_saved_and_its_retry_resumes_from_it(
    store: S3Store, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C, SIGTERM or a hangup to a real `kolora run` while `work` runs: the step saves its progress at the SIGTERM
    the runner sends it, the runner uploads it (Argo's wait container does after `argo stop`), and the retry goes on."""
    runs = tmp_path / "runs"
    returncode, err, run_dir = interrupt_work(store, runs, sig)
    assert returncode == code, err
    assert err.strip().splitlines()[-1] == STOPPED_LINES[sig] + GO_ON
    work_log = (run_dir / "logs" / "work.log").read_text()
    saved = int(re.findall(r"SIGTERM: stopped after item (\d+), progress saved", work_log)[0]) + 1
    assert f"uploaded the stopped step's outputs, as Argo does: progress ({saved} objects)" in work_log
    assert len(store.list_keys(f"{run_dir.name}/work-progress/")) == saved
    assert record(run_dir)["status"] == "Failed"
    assert re.search(r"work\s+Failed\s+\d+\.\ds\s+\(interrupted\)", (run_dir / "summary.txt").read_text())

    assert main(["run", "--retry", run_dir.name, "--runs-dir", str(runs)]) == 0
    work_log = (run_dir / "logs" / "work.log").read_text()
    assert f"resuming after {saved} items" in work_log
    assert "retry 1 of the run: work runs again (interrupted before)" in work_log
    assert (run_dir / "total.txt").read_text() == TOTAL


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_step_that_exits_0_as_it_is_stopped_succeeded_and_its_retry_keeps_it(
    store: S3Store, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """A step that finishes its work within the grace of the SIGTERM the runner sends it (train writes its LoRA,
    generate renders its last image) and exits 0: it is Succeeded with its outputs and output parameters, the run
    still stops after it as interrupted, and the retry keeps the step instead of redoing its work."""
    runs = tmp_path / "runs"
    returncode, err, run_dir = interrupt_work(store, runs, sig, "finish-on-stop=1")
    assert returncode == code, err
    assert err.strip().splitlines()[-1] == STOPPED_LINES[sig] + GO_ON
    work = next(node for node in record(run_dir)["nodes"] if node["node"] == "work")
    assert (work["phase"], work["exit_code"], work["parameters"]) == ("Succeeded", 0, {"count": "6"}), work
    assert store.exists(f"{run_dir.name}/result/sum.txt")
    assert re.search(r"work\s+Succeeded\s", (run_dir / "summary.txt").read_text())
    assert record(run_dir)["status"] == "Failed" and "total" not in {node["node"] for node in record(run_dir)["nodes"]}

    assert main(["run", "--retry", run_dir.name, "--runs-dir", str(runs)]) == 0
    work_log = (run_dir / "logs" / "work.log").read_text()
    assert work_log.count("resuming after") == 1, "work was kept, not run again"
    assert (run_dir / "total.txt").read_text() == TOTAL


def test_the_embedded_store_keeps_a_failed_runs_artifacts_until_nothing_can_retry_it(tmp_path: Path) -> None:
    """A failed run's artifacts stay in runs/.store for its retry; a successful retry removes them, and a run whose
    directory was deleted has its artifacts removed by the next run's start."""
    runs = tmp_path / "runs"

    def options(**more: Any) -> RunOptions:
        return RunOptions(template=TEMPLATES / "resumable.yaml", runs_dir=runs, console=io.StringIO(), **more)

    failed = run_workflow(options(parameters={"fail-at": "1"}))
    abandoned = run_workflow(options(parameters={"fail-at": "1"}))
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:
        prefixes = {key.split("/", 1)[0] for key in S3Store(settings).list_keys("")}
    assert prefixes == {failed.run_id, abandoned.run_id}
    shutil.rmtree(abandoned.run_dir)
    plan = plan_retry(runs, failed.run_id)
    retried = run_workflow(options(parameters=plan.given_parameters(), soft_parameters=plan.other_parameters(), retry=plan))
    assert retried.ok and (retried.run_dir / "total.txt").read_text() == TOTAL
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:
        assert S3Store(settings).list_keys("") == []


def test_only_runs_nothing_can_retry_are_dropped_from_the_store(run: Any, store: S3Store, tmp_path: Path) -> None:
    """What `drop_abandoned` (called at an embedded store's start) removes: runs whose directory is gone or holds no
    record a retry could use; never a failed run's, a release, an upload or anything not shaped like a run id."""
    runs = tmp_path / "runs"
    failed, _ = run("resumable.yaml", parameters={"fail-at": "1"})
    deleted, older, succeeded = "mini-20260101-120001-0b0b", "mini-20260101-120002-0c0c", "mini-20260101-120003-0d0d"
    others = ["models/kolora/v1/lora.safetensors", "datasets/mine/a.png", "mini-notarun/x"]
    for key in (*others, *(f"{r}/data/x" for r in (deleted, older, succeeded))):
        store.put_text(key, "x")
    (runs / older / "logs").mkdir(parents=True)  # a run of a kolora without records
    (runs / succeeded).mkdir()
    shutil.copy(failed.run_dir / RECORD_FILE, runs / succeeded / RECORD_FILE)
    done = json.loads((runs / succeeded / RECORD_FILE).read_text()) | {"status": "Succeeded"}
    (runs / succeeded / RECORD_FILE).write_text(json.dumps(done))
    kept = set(store.list_keys(f"{failed.run_id}/"))
    assert kept and drop_abandoned(store, runs) == [deleted, older, succeeded]
    assert set(store.list_keys("")) == {*others, *kept}
