"""`run_workflow(RunOptions(...)) -> RunResult`: one rendered WorkflowTemplate executed on this machine.

The order of a run: parse and validate the template, resolve the parameters (`-p` wins over soft values,
which win over the template's), check the values that feed config flags, inline the prompts file a run config
names and check the generate shards against the story's prompts (`flags.py`), start the store (the embedded one,
or the given endpoint), fill the store Secret the workflow names and point `s3-endpoint`/`s3-bucket`/`s3-region` at
the store, walk the DAG and the exit handler (`dag.py`), copy the outputs to `runs/<run-id>/` (`collect.py`) and
write the summary. Steps never see each other's files: every artifact goes through the store under the run's
prefix, so what passes here passes the same way on Argo.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from kolora_core.errors import KoloraError, closest
from kolora_core.runner.collect import collect, drop_abandoned, forget_uploads
from kolora_core.runner.context import RunContext, StepFailed
from kolora_core.runner.dag import DagWalker
from kolora_core.runner.engine import REPO_ROOT
from kolora_core.runner.engines import get_engine
from kolora_core.runner.flags import (
    check_config_parameters,
    check_generate_shards,
    config_digests,
    portable_config_parameters,
)
from kolora_core.runner.gpu_check import check_gpu_steps
from kolora_core.runner.records import NodeRecord, RunResult
from kolora_core.runner.refusal import ValueAdvice
from kolora_core.runner.retry import RetryPlan, file_sha256
from kolora_core.runner.run_record import RunRecord, StoreRecord, run_lock
from kolora_core.runner.spec import WorkflowSpec
from kolora_core.runner.step import INTERRUPTED
from kolora_core.runner.summary import write_summary
from kolora_core.runner.template import load_workflow
from kolora_core.storage.address import STORE_FLAGS_ENV, embedded_flags
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import DEFAULT_BUCKET, S3Settings, S3Store, open_at_command_line

DEFAULT_TEMPLATE = Path("workflows/dist/kolora-pipeline.yaml")
LOG_TAIL = 20
STORE_SECRET_ANNOTATION = "kolora.dev/store-secret"  # "<secret>:<access key id key>:<secret access key key>"


@dataclass
class RunOptions:
    """Everything `kolora run` decides; `s3=None` means the embedded store."""

    template: Path = DEFAULT_TEMPLATE
    parameters: Mapping[str, str] = field(default_factory=dict)
    # applied only where the template declares the parameter (e.g. the CLI's default profile)
    soft_parameters: Mapping[str, str] = field(default_factory=dict)
    engine: str = "process"
    s3: S3Settings | None = None
    embedded_bucket: str = DEFAULT_BUCKET
    runs_dir: Path = Path("runs")
    keep_work: bool = False
    # artifacts larger than this stay in the store only (a full run's models folder is ~18 GB)
    collect_max_bytes: int = 2 * 2**30
    # the embedded store's directory (default <runs_dir>/.store): kept between runs, so releases survive
    store_dir: Path | None = None
    # after a failed attempt, upload its output paths as Argo's wait container does (tests see what a cluster sees)
    upload_failed_outputs: bool = True
    # Secrets that `valueFrom.secretKeyRef` env values read: {secret: {key: value}}; the store Secret is added
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    console: TextIO | None = None
    repo_root: Path = REPO_ROOT
    # `kolora run --retry`: rerun this earlier run in place (its id, directory, uid; its succeeded steps kept)
    retry: RetryPlan | None = None
    # checks of the parameters against the store, once it answers and before anything is written (the CLI's: a
    # `-p dataset-key` with nothing under it); each raises KoloraError
    store_checks: tuple[Callable[[S3Store, Mapping[str, str]], None], ...] = ()


def resolve_parameters(workflow: WorkflowSpec, given: Mapping[str, str], soft: Mapping[str, str] | None = None) -> dict[str, str]:
    """Workflow parameters after `-p` overrides: unknown names, missing values and enum violations are errors."""
    declared = {p.name: p for p in workflow.parameters}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        close = closest(unknown[0], declared)
        hint = f"did you mean {close}?" if close else f"its parameters: {', '.join(declared) or 'none'}"
        raise KoloraError(f"unknown parameter '{unknown[0]}' for {workflow.name}: {hint}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
        elif soft and name in soft:
            value = soft[name]
        elif spec.value is not None:
            value = spec.value
        elif spec.default is not None:
            value = spec.default
        else:
            raise ValueAdvice(f"parameter '{name}' of {workflow.name} has no value", f"-p {name}=VALUE", ": ")
        if spec.enum and value not in spec.enum:
            raise KoloraError(f"parameter '{name}' is '{value}'; allowed: {', '.join(spec.enum)}")
        values[name] = value
    return values


def checked_parameters(workflow: WorkflowSpec, given: Mapping[str, str], soft: Mapping[str, str] | None = None) -> dict[str, str]:
    """`resolve_parameters`, then every value that feeds a stage's config checked by that config (`flags.py`).

    Why one function: `kolora run` and `kolora submit` refuse the same `-p` values (an enum, a `--generate.shards`
    of 0) before anything starts; the cluster would otherwise refuse them late, or on a GPU node. Both then check the
    shards against the story (`check_generate_shards`) once the run config's own errors have been said."""
    parameters = resolve_parameters(workflow, given, soft)
    check_config_parameters(workflow, parameters)
    return parameters


def store_secrets(workflow: WorkflowSpec, settings: S3Settings) -> dict[str, dict[str, str]]:
    """The Secret the workflow reads the store's keys from (annotation `kolora.dev/store-secret`), with this store's keys."""
    spec = workflow.annotations.get(STORE_SECRET_ANNOTATION)
    if not spec:
        return {}
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise KoloraError(
            f"{workflow.source}: annotation {STORE_SECRET_ANNOTATION} '{spec}' is not '<secret>:<id key>:<secret key>'"
        )
    name, id_key, secret_key = parts
    keys = {id_key: settings.access_key_id, secret_key: settings.secret_access_key}
    return {name: {k: v for k, v in keys.items() if v is not None}}  # no keys: boto3's own chain (IRSA, profiles)


def store_parameters(settings: S3Settings) -> dict[str, str]:
    """Where steps that talk to S3 themselves (champion, promote) are pointed: this run's store."""
    return {"s3-endpoint": settings.endpoint_url, "s3-bucket": settings.bucket, "s3-region": settings.region}


def store_flags_env(options: RunOptions, settings: S3Settings) -> dict[str, str]:
    """`STORE_FLAGS_ENV` for the steps: how the user's shell reaches the embedded store the steps reach through a
    port that is gone after the run (`kolora_core.storage.address`); nothing for an external store, or where `-p`
    points the steps elsewhere or the store is not `<runs-dir>/.store` (no flag names that)."""
    default_dir = options.store_dir is None or options.store_dir.resolve() == (options.runs_dir / STORE_DIRNAME).resolve()
    if not settings.embedded or "s3-endpoint" in options.parameters or not default_dir:
        return {}
    bucket = options.parameters.get("s3-bucket", settings.bucket)
    return {STORE_FLAGS_ENV: shlex.join(embedded_flags(options.runs_dir, bucket))}


def new_run_id(workflow_name: str) -> str:
    return f"{workflow_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_workflow(options: RunOptions) -> RunResult:
    """Run the template end to end; returns the result (status Failed on a step failure) and prints the summary.

    Template and configuration errors found before or during the run raise `KoloraError` (after the
    summary of what did run has been written); a failing step does not raise: see `RunResult.failed`.
    Ctrl-C and SIGTERM (as the CLI raises it) stop the running step, write the summary and propagate.
    With `options.retry` the run is that earlier run, rerun in place (`retry.py`).
    """
    console = options.console or sys.stdout
    # a relative template path is looked up in the working directory, then in the repo root
    template_path = options.template
    if not template_path.is_absolute() and not template_path.exists():
        template_path = options.repo_root / template_path
    workflow = load_workflow(template_path)
    try:
        parameters = checked_parameters(workflow, options.parameters, options.soft_parameters)
        parameters = portable_config_parameters(workflow, parameters)
        configs = config_digests(workflow, parameters)
        check_generate_shards(workflow, parameters)
    except KoloraError as refusal:
        if options.retry is None:
            raise
        raise options.retry.refused(refusal) from None  # its advice is a -p value, which a retry does not take
    if options.retry is not None:
        options.retry.check_unchanged(template_path, parameters, configs)
    engine = get_engine(options.engine, options.repo_root)
    check_gpu_steps(workflow, parameters, engine)
    changed = tuple(p.name for p in workflow.parameters if parameters[p.name] != (p.value if p.value is not None else p.default))
    record = _new_record(options, workflow, template_path, parameters, configs, engine.name)

    store_dir = options.store_dir or options.runs_dir / STORE_DIRNAME
    store_cm = EmbeddedS3(store_dir, options.embedded_bucket) if options.s3 is None else contextlib.nullcontext(options.s3)
    started = time.monotonic()
    with store_cm as settings:
        store = S3Store(settings)
        open_at_command_line(store)  # before anything is written: a dead endpoint costs one line and no run directory
        declared = {p.name for p in workflow.parameters}
        parameters |= {k: v for k, v in store_parameters(settings).items() if k in declared and k not in options.parameters}
        for check in options.store_checks:
            check(store, parameters)
        record.store = _store_record(settings, store_dir)
        runs_dir = options.runs_dir.resolve()
        if settings.embedded and store_dir.resolve() == runs_dir / STORE_DIRNAME:  # the runs dir's own store
            _best_effort(lambda: drop_abandoned(store, runs_dir), None)
        run_dir = _run_directory(runs_dir, record)
        with run_lock(run_dir, record.run_id) as lock_fd:
            run_id = record.run_id
            _point_latest(runs_dir, run_id)
            where = "embedded" if settings.embedded else settings.endpoint_url
            result = RunResult(
                run_id=run_id,
                status="Running",
                run_dir=run_dir,
                template=template_path,
                engine=engine.name,
                store=f"{where} s3://{settings.bucket}/{run_id}/",
                parameters=parameters,
                changed=changed,
                retries=record.retries,
            )
            ctx = RunContext(
                workflow=workflow,
                run_id=run_id,
                store=store,
                engine=engine,
                run_dir=run_dir,
                result=result,
                console=console,
                keep_work=options.keep_work,
                upload_failed_outputs=options.upload_failed_outputs,
                collect_max_bytes=options.collect_max_bytes,
                secrets={**store_secrets(workflow, settings), **options.secrets},
                global_scope=_global_scope(workflow, run_id, record.uid, parameters),
                earlier=options.retry.earlier_nodes() if options.retry is not None else {},
                record=record,
                step_env=store_flags_env(options, settings),
                run_lock_fd=lock_fd,
            )
            if options.retry is not None:
                ctx.uploaded += options.retry.record.uploaded_elsewhere
            ctx.save_record()
            again = f", retry {record.retries}" if record.retries else ""
            print(f"kolora run: {run_id} ({workflow.name}, engine {engine.name}, {settings.label}{again})", file=console)
            walker = DagWalker(ctx)
            with _interruptible(ctx, started, console):
                error = _guarded(walker.run_entrypoint, result)
                main_failed = result.failed
                status = "Succeeded" if main_failed is None and error is None else ("Error" if error else "Failed")
                if workflow.on_exit is not None:
                    exit_error = _guarded(lambda: walker.run_exit_handler(status), result)
                    error = error or exit_error
                    if main_failed is not None and result.failed is not main_failed:
                        result.warnings.append(
                            f"the onExit handler failed too ({result.failed.message if result.failed else ''})"
                        )
                        result.failed = main_failed
            result.status = "Succeeded" if result.failed is None and error is None else "Failed"
            ctx.save_record()
            _best_effort(lambda: collect(ctx), result.warnings, "collecting outputs")
            if settings.embedded and result.ok:  # a failed run's artifacts stay for its retry (drop_abandoned)
                _best_effort(lambda: forget_uploads(ctx), result.warnings, "cleaning the embedded store")
    if result.ok and not options.keep_work:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    result.duration = time.monotonic() - started
    print(write_summary(result), end="", file=console)
    if error is not None:
        raise error
    return result


def _new_record(
    options: RunOptions,
    workflow: WorkflowSpec,
    template: Path,
    parameters: Mapping[str, str],
    configs: dict[str, str],
    engine: str,
) -> RunRecord:
    """What `run.json` starts with: the run as given (a retry: the earlier run's id, uid and start, one more retry)."""
    record = RunRecord(
        run_id="",
        workflow=workflow.name,
        template=str(template.resolve()),
        template_sha256=file_sha256(template),
        parameters=dict(parameters),
        given=sorted(options.parameters),
        configs=configs,
        engine=engine,
        store=StoreRecord(embedded=options.s3 is None, bucket=""),  # filled in once the store is up
        uid=str(uuid.uuid4()),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if options.retry is not None:
        earlier = options.retry.record
        record.run_id, record.uid, record.started = earlier.run_id, earlier.uid, earlier.started
        record.retries = earlier.retries + 1
    return record


def _store_record(settings: S3Settings, store_dir: Path) -> StoreRecord:
    """Where a retry finds the run's artifacts: the embedded store's directory, or the endpoint (keys: the env's)."""
    if settings.embedded:
        return StoreRecord(embedded=True, bucket=settings.bucket, store_dir=str(store_dir.resolve()))
    return StoreRecord(embedded=False, bucket=settings.bucket, endpoint=settings.endpoint_url, region=settings.region)


def _run_directory(runs_dir: Path, record: RunRecord) -> Path:
    """A new run's directory under a fresh id (set in `record`), or, for a retry (the id set), the run's own."""
    if record.run_id:
        return runs_dir / record.run_id
    record.run_id = new_run_id(record.workflow)
    while (runs_dir / record.run_id).exists():
        record.run_id = new_run_id(record.workflow)
    run_dir = runs_dir / record.run_id
    (run_dir / "logs").mkdir(parents=True)
    return run_dir


def failure_report(result: RunResult, lines: int = LOG_TAIL) -> str:
    """`kolora run: step <node> failed (exit N); last lines of its log:` + the tail, for the CLI's stderr."""
    node = result.failed
    if node is None:
        return ""
    head = failure_head(node)
    tail: list[str] = []
    if node.log is not None and node.log.is_file():
        with node.log.open(encoding="utf-8", errors="replace") as fh:
            tail = [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    if not tail:
        return head
    return head + "; last lines of its log:\n" + "\n".join(f"  {line}" for line in tail)


def failure_head(node: NodeRecord) -> str:
    """`kolora run: step <node> failed (exit N)`: the failure report's first line."""
    why = f"exit {node.exit_code}" if node.exit_code is not None and node.exit_code > 0 else node.message
    return f"kolora run: step {node.node} failed ({why})"


def _global_scope(workflow: WorkflowSpec, run_id: str, uid: str, parameters: Mapping[str, str]) -> dict[str, str]:
    return {
        "workflow.name": run_id,
        "workflow.uid": uid,  # a retry keeps it, as argo retry does
        "workflow.namespace": "local",
        "workflow.mainEntrypoint": workflow.entrypoint,
        "workflow.status": "Running",
        **{f"workflow.parameters.{k}": v for k, v in parameters.items()},
    }


def _guarded(action: object, result: RunResult) -> KoloraError | None:
    """Run a DAG walk; a failed step is already recorded, a template/config error is returned (and recorded)."""
    try:
        action()  # type: ignore[operator]
    except StepFailed:
        return None
    except KoloraError as exc:
        result.error = result.error or str(exc)
        return exc
    return None


@contextlib.contextmanager
def _interruptible(ctx: RunContext, started: float, console: TextIO) -> Iterator[None]:
    """Ctrl-C, SIGTERM (the engine has stopped the step by now) or a crash: summary and record written, re-raised.

    The run's artifacts stay in the store, so that `kolora run --retry` can go on from here."""
    result = ctx.result
    try:
        yield
    except BaseException:
        for node in result.nodes:
            if node.phase == "Pending":  # not one of the step executor's (it records its own, with its duration)
                node.phase, node.message = "Failed", INTERRUPTED
        result.status, result.duration = "Failed", time.monotonic() - started
        ctx.save_record()
        _best_effort(lambda: print(write_summary(result), end="", file=console))
        raise


def _point_latest(runs_dir: Path, run_id: str) -> None:
    """runs/latest -> the newest run, replaced atomically so a concurrent reader never sees it missing."""
    link = runs_dir / "latest"
    tmp = runs_dir / f".latest-{os.getpid()}-{secrets.token_hex(2)}"
    tmp.symlink_to(run_id, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def _best_effort(action: object, warnings: list[str] | None = None, what: str = "") -> None:
    """After-run chores must not hide the run's own outcome; their failures become warnings."""
    try:
        action()  # type: ignore[operator]
    except (KoloraError, OSError) as exc:
        if warnings is not None:
            warnings.append(f"{what}: {exc}")
