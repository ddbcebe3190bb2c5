"""What one local run shares between its parts: the DAG walk (`dag.py`), the steps (`step.py`), the collection (`collect.py`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kolora_core.runner.engine import Engine
from kolora_core.runner.records import NodeRecord, RunResult
from kolora_core.runner.run_record import RECORD_FILE, RunRecord, node_to_json, write_record
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
    # a retry (`retry.py`): the nodes of the run's last invocation, by node id; empty for a new run
    earlier: Mapping[str, NodeRecord] = field(default_factory=dict)
    record: RunRecord | None = None  # runs/<run-id>/run.json, rewritten by `save_record`
    run_lock_fd: int | None = None  # runs/<run-id>/.lock, held: each step's guard holds it too (`StepRun.run_lock_fd`)

    def save_record(self) -> None:
        """Write the run's record as it stands (status, every node so far): what a retry starts from. A record that
        cannot be written (a full disk) is a warning: the run itself goes on, only its retry would start over."""
        if self.record is None:
            return
        self.record.status = self.result.status
        self.record.nodes = [node_to_json(node) for node in self.result.nodes]
        self.record.uploaded_elsewhere = sorted({key for key in self.uploaded if not key.startswith(f"{self.run_id}/")})
        try:
            write_record(self.run_dir, self.record)
        except OSError as exc:
            warning = f"the run record {self.run_dir / RECORD_FILE} was not written ({exc}): --retry cannot resume this run"
            if warning not in self.result.warnings:
                self.result.warnings.append(warning)

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
