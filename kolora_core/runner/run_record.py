"""`runs/<run-id>/run.json`: what a local run was started with and how far it got, for `kolora run --retry`.

Why a file: a retry must rerun the run as it was (the same template, parameters, uid, engine and store) and know
which steps succeeded and where their outputs are in the store, as Argo knows both from the Workflow object it
keeps. The record is rewritten (write to a temporary name, then rename) when the run starts, after every step and
at the end, Ctrl-C and stop signals included, so even a runner killed outright (SIGKILL) leaves the steps it
finished on record. `.lock` in the run directory is held (flock) while a `kolora run` works on the run, and by the
guard of its running step until that step is gone (a runner killed outright leaves the step to its guard to stop):
a retry of a run that is still going is refused, and two retries of one run cannot interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kolora_core.errors import KoloraError
from kolora_core.runner.records import ArtifactRef, NodeRecord

RECORD_FILE = "run.json"
LOCK_FILE = ".lock"
RUNNING = "it is running (a kolora run is working on it, or the step of one that was killed is still being stopped)"
FORMAT = 1  # raised when a field changes meaning; a record of another format is not retried
NODE_FIELDS = ("node", "task", "display", "template", "phase", "message", "duration", "exit_code", "parameters",
               "result", "attempts", "reused", "before")  # fmt: skip


@dataclass
class StoreRecord:
    """Where the run's artifacts are: the embedded store (its directory) or an external endpoint (keys from the env)."""

    embedded: bool
    bucket: str
    endpoint: str | None = None
    region: str | None = None
    store_dir: str | None = None


@dataclass
class RunRecord:
    """One run, as `kolora run` started it and as far as it got (`nodes`: the last invocation's, retries included)."""

    run_id: str
    workflow: str
    template: str  # the file the run read, absolute
    template_sha256: str
    parameters: dict[str, str]  # resolved, before the store's own endpoint and bucket were filled in
    given: list[str]  # the names given with -p: the store's values never replace these
    configs: dict[str, str]  # template name -> sha256 of the config that template's stage resolves
    engine: str
    store: StoreRecord
    uid: str
    started: str  # wall-clock time of the first invocation, ISO 8601
    status: str = "Running"  # Running (or a runner that died), Succeeded, Failed
    retries: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    uploaded_elsewhere: list[str] = field(default_factory=list)  # keys written outside <run-id>/ (embedded cleanup)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """The record `text` holds, every field of it and of its nodes of the type it is written with (strict: a
        hand-edited `"retries": "1"` or a node that is not an object was a traceback deep in the retry, or ran it)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'}, not {FORMAT}")
        try:
            record = TypeAdapter(cls).validate_json(text, strict=True)
            TypeAdapter(list[NodeRecord]).validate_json(json.dumps(record.nodes), strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where if isinstance(first['loc'][0], str) else f'nodes.{where}'}: {first['msg']}") from None
        return record


def node_to_json(node: NodeRecord) -> dict[str, Any]:
    data = {name: getattr(node, name) for name in NODE_FIELDS}
    data["artifacts"] = {name: asdict(ref) for name, ref in node.artifacts.items()}
    return data


def node_from_json(data: dict[str, Any]) -> NodeRecord:
    node = NodeRecord(**{name: data[name] for name in NODE_FIELDS if name in data})
    node.artifacts = {name: ArtifactRef(**ref) for name, ref in data.get("artifacts", {}).items()}
    return node


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Replace `run.json` whole: a reader (a retry, a crash mid-write) sees the old record or the new one."""
    tmp = run_dir / f".{RECORD_FILE}.{os.getpid()}"
    tmp.write_text(record.to_json(), encoding="utf-8")
    os.replace(tmp, run_dir / RECORD_FILE)


# what reading a record can raise: missing or unreadable (OSError); cut short, not JSON, another format or a field of
# another type (ValueError)
UNREADABLE = (OSError, ValueError)


def retryable_record(run_dir: Path) -> RunRecord | None:
    """The run's record if it reads back and the run did not succeed (a retry could use it); else None."""
    try:
        record = RunRecord.from_json((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
    except UNREADABLE:
        return None
    return record if record.status != "Succeeded" else None


def read_record(run_dir: Path, shown: str) -> RunRecord:
    """The run's record; a missing or unreadable one is a one-line `KoloraError` (`shown`: the run as the user named it)."""
    path = run_dir / RECORD_FILE
    if not path.is_file():
        raise KoloraError(
            f"cannot retry {shown}: {path} does not exist (not a run directory, or a run of a kolora without --retry)"
        )
    try:
        return RunRecord.from_json(path.read_text(encoding="utf-8"))
    except UNREADABLE as exc:
        raise KoloraError(f"cannot retry {shown}: {path} is not a run record this kolora reads ({exc})") from None


@contextlib.contextmanager
def run_lock(run_dir: Path, shown: str) -> Iterator[int]:
    """Hold the run's `.lock` for the block, which gets its descriptor (each step's guard keeps a copy of it, holding
    the lock until the step is gone: `kolora_core/step_guard.py`); held by another process: a one-line `KoloraError`."""
    with (run_dir / LOCK_FILE).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KoloraError(f"cannot retry {shown}: {RUNNING} ({run_dir / LOCK_FILE} is held)") from None
        yield fh.fileno()


def is_locked(run_dir: Path) -> bool:
    """Whether a `kolora run` holds the run now (a Running record whose lock is free: its runner died)."""
    path = run_dir / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
