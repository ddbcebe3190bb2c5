"""Fixtures of the runner tests: one real S3 server (moto on 127.0.0.1) for the session, and a run helper.

No boto3/moto mocking: every test talks the S3 protocol over HTTP, as the runner does with MinIO.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kolora_core.runner.local import RunOptions, run_workflow
from kolora_core.runner.records import RunResult
from kolora_core.storage.embedded import EmbeddedS3
from kolora_core.storage.s3 import S3Settings, S3Store

TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Settings]:
    """A moto S3 server the tests treat as an *external* endpoint (so objects stay there to be inspected)."""
    with EmbeddedS3(bucket="kolora-test") as settings:
        yield replace(settings, embedded=False)


@pytest.fixture
def store(s3_server: S3Settings) -> S3Store:
    """A fresh bucket per test, so listings only show this test's objects."""
    s = S3Store(replace(s3_server, bucket=f"t-{secrets.token_hex(4)}"))
    s.ensure_bucket()
    return s


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
