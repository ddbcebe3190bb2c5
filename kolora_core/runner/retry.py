"""`kolora run --retry RUN`: rerun a failed or interrupted run in place, as `argo retry` reruns a Workflow.

What Argo does, and so what this does: the run keeps its name, hence its artifact keys (`{{workflow.name}}/...`),
its parameters and its uid; the nodes that succeeded are kept with their outputs, not rerun; the failed or
interrupted node and everything after it run again, each attempt a new pod (its number follows the earlier
attempts'), which finds at its keys what the earlier attempts saved: train's `train-checkpoints` (it resumes from
the newest checkpoint), generate's `generate-progress` (it renders only the images it lacks). The exit handler
runs again, with the new outcome. A kept node whose outputs are no longer in the store runs again.

Refused, with one line and exit 2, before the store starts: a run that succeeded, a directory without a record
(`run.json`) or with one not as kolora writes it, a run a `kolora run` is still working on, a run whose embedded
store directory is gone (its runs directory moved, or the store deleted: a retry started a new, empty store at the
old path and ran every step again against it, with no champion), and a run whose template file or resolved configs
differ from what it recorded (a profile or a default edited since): kept steps and rerun steps would come from two
different pipelines, and train's checkpoints would be refused anyway. The code is the checkout's, as it is now, so
its parameter checks may refuse what the run was started with (`RetryPlan.refused`): a new run fixes that.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.runner.context import RunContext
from kolora_core.runner.records import NodeRecord
from kolora_core.runner.refusal import ValueAdvice
from kolora_core.runner.run_record import (
    RECORD_FILE,
    RUNNING,
    RunRecord,
    is_locked,
    node_from_json,
    read_record,
    retryable_record,
)
from kolora_core.runner.spec import TemplateSpec
from kolora_core.runner.step import INTERRUPTED

KEPT = "succeeded before the retry; kept"


@dataclass(frozen=True)
class RetryPlan:
    """The run to rerun: its directory and its record."""

    run_dir: Path
    record: RunRecord

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def earlier_nodes(self) -> dict[str, NodeRecord]:
        """The nodes of the last invocation, by node id: the succeeded ones are kept, the others give their
        attempt count (a new pod never takes an earlier pod's number, its scratch dir or its default keys)."""
        return {data["node"]: node_from_json(data) for data in self.record.nodes}

    def given_parameters(self) -> dict[str, str]:
        return {name: value for name, value in self.record.parameters.items() if name in self.record.given}

    def other_parameters(self) -> dict[str, str]:
        return {name: value for name, value in self.record.parameters.items() if name not in self.record.given}

    def refused(self, refusal: KoloraError) -> KoloraError:
        """`refusal`, a parameter check's of the run's recorded values, said for the retry: one line whose way out is
        a new run with the value the check asks for, not the `-p` it advised (a retry keeps the run's -p values and
        takes none, so `kolora run --retry -p ...` is refused).

        Why: the values passed the checks of the kolora that started the run; a check added or tightened since (more
        `-p generate-shards` than the story has prompts was once taken) refuses them at every retry."""
        problem, fix = str(refusal), "with -p values that pass"
        if isinstance(refusal, ValueAdvice):  # flags.py's and local.resolve_parameters' checks: a value to pass
            problem, fix = refusal.problem, f"with {refusal.advice}"
        return KoloraError(
            f"cannot retry {self.run_id}: {problem}; a retry keeps the run's -p values and takes none: start a new run "
            f"(`kolora run`) {fix}"
        )

    def check_unchanged(self, template: Path, parameters: Mapping[str, str], configs: Mapping[str, str]) -> None:
        """Refuse (one line) a retry whose template file, parameters or resolved configs differ from the record."""
        record, head = self.record, f"cannot retry {self.run_id}"
        now = file_sha256(template)
        if now != record.template_sha256:
            raise KoloraError(
                f"{head}: its template {template} changed since the run (sha256 {record.template_sha256[:12]} then, "
                f"{now[:12]} now); a retry reruns what the run ran: start a new run instead"
            )
        if dict(parameters) != record.parameters:
            changed = sorted(k for k in {*parameters, *record.parameters} if parameters.get(k) != record.parameters.get(k))
            raise KoloraError(f"{head}: its parameters resolve differently now ({', '.join(changed)}): start a new run instead")
        differ = sorted(name for name in {*configs, *record.configs} if configs.get(name) != record.configs.get(name))
        if differ:
            raise KoloraError(
                f"{head}: the config that template '{differ[0]}' resolves changed since the run (a profile or kolora's "
                "defaults were edited): its kept steps and its rerun steps would disagree; start a new run instead"
            )


def plan_retry(runs_dir: Path, run: str | None) -> RetryPlan:
    """The run `run` names (its id under `runs_dir`, or its directory), or with None the newest one that failed."""
    run_dir, shown = (find_run(runs_dir, run), run) if run is not None else newest_failed(runs_dir)
    record = read_record(run_dir, shown)
    if record.status == "Succeeded":
        raise KoloraError(f"cannot retry {record.run_id}: it succeeded, there is nothing to rerun")
    if is_locked(run_dir):
        raise KoloraError(f"cannot retry {record.run_id}: {RUNNING}")
    if not Path(record.template).is_file():
        raise KoloraError(f"cannot retry {record.run_id}: its template {record.template} no longer exists: start a new run")
    if record.store.embedded and record.store.store_dir and not Path(record.store.store_dir).is_dir():
        raise KoloraError(
            f"cannot retry {record.run_id}: its embedded store {record.store.store_dir} no longer exists (deleted, or its "
            "runs directory moved): start a new run (nothing was created)"
        )
    return RetryPlan(run_dir.resolve(), record)


def find_run(runs_dir: Path, run: str) -> Path:
    """`run` as a directory (a path to a run), else as a run id under `runs_dir` (`latest` included)."""
    for candidate in (Path(run), runs_dir / run):
        if candidate.is_dir() and (candidate / "logs").is_dir():
            return candidate.resolve()
    raise KoloraError(
        f"cannot retry {run}: no run '{run}' under {runs_dir}/ (give a run id, e.g. from {runs_dir}/latest, or a run's "
        "directory; --runs-dir names another runs directory)"
    )


def newest_failed(runs_dir: Path) -> tuple[Path, str]:
    """The run under `runs_dir` that failed last (its record written last) and is not running now."""
    found: list[tuple[float, Path]] = []
    for record_path in runs_dir.glob(f"*/{RECORD_FILE}"):
        if retryable_record(record_path.parent) is None or is_locked(record_path.parent):
            continue
        with contextlib.suppress(OSError):  # deleted meanwhile
            found.append((record_path.stat().st_mtime, record_path.parent))
    if not found:
        raise KoloraError(f"cannot retry: no failed or interrupted run under {runs_dir}/ (--retry RUN names one)")
    run_dir = max(found)[1]
    return run_dir, run_dir.name


def reuse(ctx: RunContext, node: NodeRecord, template: TemplateSpec, keep: bool = True) -> bool:
    """Keep `node` as the earlier invocation left it, if it succeeded there, `keep` allows it (the exit handler always
    runs again) and its outputs are still in the store; otherwise note the earlier attempts and the time they took
    (the node runs again, in new pods) and return False."""
    earlier = ctx.earlier.get(node.node)
    if earlier is None:
        return False
    node.attempts, node.before = earlier.attempts, earlier.before + earlier.duration  # its time so far, if it reruns
    node.log = ctx.run_dir / "logs" / f"{node.node}.log"
    if not keep or earlier.phase != "Succeeded" or earlier.template != template.name:
        before = "interrupted" if earlier.phase == "Failed" and earlier.message == INTERRUPTED else earlier.phase
        _log(node, f"--- kolora run: retry {ctx.result.retries} of the run: {node.display} runs again ({before} before)")
        return False
    gone = [name for name, ref in earlier.artifacts.items() if not ctx.store.has_artifact(ref.key)]
    if gone:
        ctx.say(f"--- {node.display}: succeeded before, but its output '{gone[0]}' is no longer in the store: running it again")
        return False
    node.phase, node.message, node.duration, node.reused = "Succeeded", KEPT, earlier.duration, True
    node.before = earlier.before
    node.exit_code, node.result = earlier.exit_code, earlier.result
    node.parameters, node.artifacts = dict(earlier.parameters), dict(earlier.artifacts)
    for spec in template.output_parameters:
        if spec.global_name and spec.name in node.parameters:
            ctx.global_scope[f"workflow.outputs.parameters.{spec.global_name}"] = node.parameters[spec.name]
    ctx.say(f"--- {node.display}: {KEPT}")
    return True


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(node: NodeRecord, line: str) -> None:
    assert node.log is not None
    node.log.parent.mkdir(parents=True, exist_ok=True)
    with node.log.open("a", encoding="utf-8") as log:
        log.write(line + "\n")
