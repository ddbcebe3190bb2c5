"""What a local run produced, node by node: shared by the executor (which fills it) and the summary (which reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ArtifactRef:
    """Where an output artifact went: its key in the run's bucket, whether it is a tar.gz, its container path."""

    key: str
    archive: bool
    path: str


@dataclass
class NodeRecord:
    """One executed (or skipped) task instance. `node` is file-safe: `task`, or `task.<i>` for fan-out item i."""

    node: str
    task: str
    display: str
    template: str = ""
    phase: str = "Pending"  # Succeeded, Skipped, Omitted, Failed
    message: str = ""
    duration: float = 0.0
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)
    result: str | None = None
    log: Path | None = None
    scratch: Path | None = None
    attempts: int = 0  # pods run for this node so far, over a run and its retries: a new pod never reuses a number
    reused: bool = False  # succeeded in an earlier invocation of the run; kept as it was by `kolora run --retry`
    # seconds the run's earlier invocations spent on this node that `duration` leaves out (its attempts before a
    # retry ran it again): without it a retry's summary could not say what the whole run cost
    before: float = 0.0


@dataclass
class RunResult:
    """The outcome of `run_workflow`: status, every node, and where the outputs were copied."""

    run_id: str
    status: str  # Succeeded or Failed
    run_dir: Path
    template: Path
    engine: str
    store: str
    parameters: dict[str, str]
    changed: tuple[str, ...] = ()  # parameters that differ from the template's defaults
    nodes: list[NodeRecord] = field(default_factory=list)
    duration: float = 0.0
    failed: NodeRecord | None = None
    error: str | None = None  # a template/config error that stopped the run (a KoloraError message)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    flattened: bool = False  # the workflow names its summary artifacts (kolora.dev/summary-artifacts)
    retries: int = 0  # how many times `kolora run --retry` has rerun this run, this invocation included

    @property
    def ok(self) -> bool:
        return self.status == "Succeeded"

    def node(self, node: str) -> NodeRecord:
        for record in self.nodes:
            if record.node == node:
                return record
        raise KeyError(node)
