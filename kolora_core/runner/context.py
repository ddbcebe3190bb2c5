"""What one local run shares between its parts: the DAG walk (`dag.py`), the steps (`step.py`), the collection (`collect.py`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kolora_core.runner.engine import Engine
from kolora_core.runner.records import RunResult
from kolora_core.runner.spec import WorkflowSpec
from kolora_core.storage.s3 import S3Store


class StepFailed(Exception):
    """A step ended badly (non-zero exit after its retries, missing input or output): the DAG stops here."""


@dataclass
class RunContext:
    """One run: the workflow, where its artifacts and files go, and the scope every template sees."""

    workflow: WorkflowSpec
    run_id: str
    store: S3Store
    engine: Engine
    run_dir: Path
    result: RunResult
    console: TextIO
    keep_work: bool = False
    upload_failed_outputs: bool = True
    collect_max_bytes: int = 2 * 2**30
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    uploaded: list[str] = field(default_factory=list)  # every key this run wrote, for the embedded store's cleanup
    global_scope: dict[str, str] = field(default_factory=dict)  # workflow.* (parameters, outputs, status)
    # env every step gets beside its template's (which wins): what only the runner knows, e.g. the store's shell flags
    step_env: Mapping[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one line at a time on the console

    @property
    def work_dir(self) -> Path:
        return self.run_dir / ".work"

    def say(self, text: str) -> None:
        with self.lock:
            self.show(text)

    def show(self, text: str) -> None:
        """One line on the console, the caller holding `lock`. A console nobody reads any more (a hung-up terminal,
        a `| tee` that died with it) must not stop the run: the line is in the step's log, and the run goes on
        stopping the step and saving what it kept."""
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed stream
            print(text, file=self.console, flush=True)
