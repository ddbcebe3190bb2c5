"""A `kolora run` killed outright (SIGKILL, as the OOM killer does) while a step runs: the step's guard stops the step
as Kubernetes stops a deleted pod, and `kolora run --retry` waits for that instead of starting the step beside it.

Real runner processes on orphan.yaml; the runner runs with a grace of GRACE_S instead of 10 s (the module constant,
set in the runner process), so that a step which ignores SIGTERM is killed within the test's patience.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kolora_core.cli import main
from kolora_core.runner.engine import StepRun, follow, start_step, stop_group
from kolora_core.runner.run_record import RUNNING
from kolora_core.storage.s3 import S3Store

from .conftest import TEMPLATES

pytestmark = pytest.mark.usefixtures("store_credentials")  # steps reach the store with the keys of the environment

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 3
RUNNER = (
    "import sys; from kolora_core.runner import engine; "
    f"engine.STOP_GRACE_S = {GRACE_S}; from kolora_core.cli import main; sys.exit(main(sys.argv[1:]))"
)


def members(group: int) -> list[int]:
    """The live processes of process group `group` (a zombie is gone)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if state != "Z" and int(pgrp) == group:
                found.append(int(stat.parent.name))
    return found


def wait_gone(group: int, timeout: float) -> float:
    """When (time.monotonic) the last process of `group` was seen gone; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while members(group):
        assert time.monotonic() < deadline, f"still running {timeout} s after the runner died: {members(group)}"
        time.sleep(0.05)
    return time.monotonic()


@contextlib.contextmanager
def running_step(store: S3Store, tmp_path: Path, *params: str, engine: str = "process") -> Iterator[tuple[int, Path, int]]:
    """A real `kolora run` of orphan.yaml, once its step runs: (the runner's pid, the step's dir, the step's group)."""
    here = tmp_path / "step"
    here.mkdir()
    argv = [sys.executable, "-c", RUNNER, "run", "--template", str(TEMPLATES / "orphan.yaml"), "-p", f"dir={here}"]
    argv += ["--engine", engine, "--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    argv += ["--runs-dir", str(tmp_path / "runs"), *(arg for param in params for arg in ("-p", param))]
    with (tmp_path / "runner.log").open("w") as log:
        runner = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=log)
    group = None
    try:
        ready = here / ("client" if engine != "process" else "pids")
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert runner.poll() is None and time.monotonic() < deadline, (tmp_path / "runner.log").read_text()
            time.sleep(0.05)
        group = os.getpgid(int(ready.read_text().split()[0]))
        yield runner.pid, here, group
    finally:
        runner.kill()
        runner.wait()
        if group is not None and members(group):  # a step that survived (an assertion failed)
            os.killpg(group, signal.SIGKILL)


def kill(runner: int) -> float:
    """SIGKILL to the runner: no handler runs, it stops nothing. Returns when it was sent (time.monotonic)."""
    sent = time.monotonic()
    os.kill(runner, signal.SIGKILL)
    return sent


def test_a_step_whose_runner_is_killed_gets_sigterm_and_its_group_dies_with_it(store: S3Store, tmp_path: Path) -> None:
    """The step saves at the SIGTERM and exits; its child, which ignores SIGTERM, is SIGKILLed at once, not left."""
    with running_step(store, tmp_path) as (runner, here, group):
        step, child = (int(pid) for pid in (here / "pids").read_text().split())
        assert set(members(group)) >= {step, child}, "the step and its child: one process group"
        sent = kill(runner)
        gone = wait_gone(group, GRACE_S + 10)
        assert (here / f"sigterm-{step}").exists() and (here / f"sigterm-{child}").exists(), "SIGTERM to the whole group"
        assert gone - sent < GRACE_S, "the step ended at its SIGTERM: what it left running is killed then, not after the grace"


def test_a_step_that_ignores_sigterm_is_killed_after_the_grace(store: S3Store, tmp_path: Path) -> None:
    with running_step(store, tmp_path, "stubborn=1") as (runner, here, group):
        step, _ = (int(pid) for pid in (here / "pids").read_text().split())
        sent = kill(runner)
        gone = wait_gone(group, GRACE_S + 10)
        assert (here / f"sigterm-{step}").exists()
        assert gone - sent >= GRACE_S, "SIGKILL comes after the grace, as the runner's own stop gives it"


def test_a_retry_is_refused_while_the_killed_runners_step_stops_then_runs_it_alone(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dead runner's lock is gone, but the step's guard holds the run's `.lock` until the step is: no second copy."""
    runs = tmp_path / "runs"
    with running_step(store, tmp_path, "stubborn=1") as (runner, here, group):
        run_id = (runs / "latest").resolve().name
        kill(runner)
        assert main(["run", "--retry", run_id, "--runs-dir", str(runs)]) == 2
        assert f"cannot retry {run_id}: {RUNNING}" in capsys.readouterr().err
        assert members(group), "refused while the step was still stopping"
        wait_gone(group, GRACE_S + 10)
        assert main(["run", "--retry", run_id, "--runs-dir", str(runs)]) == 0
    assert not (here / "overlap").exists(), (here / "overlap").read_text()
    assert "the earlier pods are gone" in (runs / run_id / "logs" / "sleeper.log").read_text()


FAKE_PODMAN = """#!/bin/sh
# a stand-in for podman: `run` is a client that waits until `stop` ends it, as a container's client does
for a in "$@"; do
  case "$a" in
    info) exit 0 ;;
    inspect) echo '{"User":""}'; exit 0 ;;
    stop) echo "$@" > "$FAKE_DIR/stopped"; kill "$(cat "$FAKE_DIR/client")"; exit 0 ;;
    run) echo $$ > "$FAKE_DIR/client.tmp"; mv "$FAKE_DIR/client.tmp" "$FAKE_DIR/client"; exec sleep 600 ;;
  esac
done
exit 99
"""


def test_a_container_step_whose_runner_is_killed_is_stopped_with_the_engines_stop(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container is not in the client's process group: the guard runs `podman stop --time <grace> NAME`, as the
    runner would have."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(tmp_path / "step"))
    with running_step(store, tmp_path, engine="podman") as (runner, here, group):
        kill(runner)
        wait_gone(group, GRACE_S + 10)
        stop = (here / "stopped").read_text().split()
        assert stop[:2] == ["stop", "--time"] and stop[3].startswith("kolora-sleeper-"), stop


@pytest.mark.parametrize(
    "argv",
    [["sh", "-c", "echo out; exit 7"], ["sh", "-c", "kill -TERM $$"], ["sh", "-c", "kill -KILL $$"], ["true"]],
)
def test_the_guard_passes_the_commands_exit_status_through(argv: list[str]) -> None:
    """What the runner reads (Popen's returncode, -N for a signal) is what it read without the guard."""
    lines: list[str] = []
    proc = start_step(StepRun(node="x", image="", argv=()), argv)
    assert follow(proc, lambda _, line: lines.append(line), lambda: stop_group(proc)) == subprocess.run(argv).returncode
    assert lines == (["out"] if "out" in argv[-1] else [])


@pytest.mark.parametrize("argv", [["no-such-command-kolora"], ["/etc/hostname"]])
def test_a_command_that_cannot_start_raises_as_popen_does(argv: list[str]) -> None:
    with pytest.raises(OSError) as direct:
        subprocess.Popen(argv)
    with pytest.raises(OSError) as guarded:
        start_step(StepRun(node="x", image="", argv=()), argv)
    assert (type(guarded.value), str(guarded.value)) == (type(direct.value), str(direct.value))
