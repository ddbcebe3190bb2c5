"""Fixtures of the runner tests: a run helper against the session's SeaweedFS server (tests/conftest.py).

No boto3 mocking: every test talks the S3 protocol over HTTP, as the runner does with any S3 endpoint.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from kolora_core.runner.local import RunOptions, run_workflow
from kolora_core.runner.records import RunResult
from kolora_core.storage.s3 import S3Store

TEMPLATES = Path(__file__).parent / "templates"


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
