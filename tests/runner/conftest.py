"""Fixtures of the runner tests: a run helper against the session's SeaweedFS server (tests/conftest.py).

No boto3 mocking: every test talks the S3 protocol over HTTP, as the runner does with any S3 endpoint.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kolora_core.runner.local import RunOptions, run_workflow
from kolora_core.runner.records import RunResult
from kolora_core.storage.s3 import S3Store

TEMPLATES = Path(__file__).parent / "templates"
REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "workflows" / "dist" / "kolora-pipeline.yaml"


def ingest_only(tmp_path: Path) -> str:
    """The dist pipeline's own ingest template, as the only task of a workflow (the rest of the spec unchanged)."""
    spec = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))
    ingest = next(t for t in spec["spec"]["templates"] if t["name"] == "ingest")
    spec["spec"]["templates"] = [{"name": "main", "dag": {"tasks": [{"name": "ingest", "template": "ingest"}]}}, ingest]
    spec["spec"]["entrypoint"] = "main"
    spec["spec"].pop("onExit", None)
    path = tmp_path / "ingest-only.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def ctrl_c_when_logged(
    store: S3Store,
    runs: Path,
    template: Path,
    parameters: dict[str, str],
    step: str,
    pattern: str,
    *,
    reach_s: float,
    stop_s: float,
) -> tuple[Path, str]:
    """A real `kolora run` of `template` in its own process, Ctrl-C (SIGINT) once `step`'s log matches `pattern` (a
    regular expression, within `reach_s`); the runner must stop within `stop_s` with exit 130. Returns the run's
    directory and what the runner wrote on stderr."""
    argv = [sys.executable, "-m", "kolora_core.cli", "run", "--template", str(template), "--runs-dir", str(runs)]
    argv += ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    argv += [arg for name, value in parameters.items() for arg in ("-p", f"{name}={value}")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + reach_s
        while not any(re.search(pattern, log.read_text()) for log in runs.glob(f"*/logs/{step}.log")):
            assert time.monotonic() < deadline and proc.poll() is None, f"the run's {step} did not log {pattern!r}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=stop_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    return (runs / "latest").resolve(), err


@pytest.fixture
def run(tmp_path: Path, store: S3Store) -> Any:
    """`run("pipeline.yaml", parameters=..., ...)` -> (RunResult, console text), against the test's bucket."""

    def _run(template: str, **options: Any) -> tuple[RunResult, str]:
        console = io.StringIO()
        opts = RunOptions(
            template=TEMPLATES / template,
            s3=store.settings,
            runs_dir=tmp_path / "runs",
            console=console,
            **options,
        )
        try:
            return run_workflow(opts), console.getvalue()
        finally:
            _run.console = console.getvalue()

    _run.console = ""
    return _run


@pytest.fixture
def store_credentials(monkeypatch: pytest.MonkeyPatch, store: S3Store) -> None:
    """The store's keys in the environment, where the runner's steps (and a retry) take them from, as on a laptop."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")
