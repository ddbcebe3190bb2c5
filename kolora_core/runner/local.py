"""Execute a rendered WorkflowTemplate on this machine the way Argo would.

The executor walks the entrypoint DAG in dependency order (one step at a time), evaluates `depends` and
`when`, expands withItems/withParam/withSequence, substitutes parameters, and moves every artifact through
S3: inputs are downloaded into the step's paths before it runs, outputs uploaded after, under the run's key
prefix `<run-id>/`. Steps never see each other's local files, so what passes here passes the same way on a
cluster. After the run, outputs are copied to `runs/<run-id>/` and summarised.

Promotion: a DAG task named `promote` (the Argo step that uploads the release with `kolora publish`, its
S3 keys from a Secret) is not executed here; instead, after a Succeeded run whose `publish` task Succeeded,
the runner itself publishes that task's `release` output into the run's own store under
`<publish-prefix parameter, default models>/<name>/<version>/` (kolora_core.release.promote).

Public entry point: `run_workflow(RunOptions(...)) -> RunResult`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from kolora_core.errors import KoloraError
from kolora_core.release.promote import DEFAULT_PREFIX, promote
from kolora_core.runner.engines import REPO_ROOT, Engine, StepRun, get_engine
from kolora_core.runner.expressions import TaskOutcome, evaluate_when, should_retry, substitute, variables_in
from kolora_core.runner.records import ArtifactRef, NodeRecord, RunResult
from kolora_core.runner.summary import write_summary
from kolora_core.runner.template import (
    ArtifactSpec,
    ParamSpec,
    TaskSpec,
    TemplateSpec,
    WorkflowSpec,
    load_workflow,
    topological_order,
)
from kolora_core.stages import COMPLETE_MARKER, CONTAINER_ROOT, stage_of
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import DEFAULT_BUCKET, ArtifactNotFound, S3Settings, S3Store

SUMMARY_ANNOTATION = "kolora.dev/summary-artifacts"
DEFAULT_TEMPLATE = Path("workflows/dist/kolora-pipeline.yaml")
RESULT_LIMIT = 256 * 1024  # Argo keeps at most 256 kB of stdout as outputs.result
LOG_TAIL = 20
PUBLISH_TASK, RELEASE_ARTIFACT, PROMOTE_TASK = "publish", "release", "promote"
PREFIX_PARAMETER = "publish-prefix"


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
    # the embedded store's directory (default <runs_dir>/.store): kept between runs, so releases survive
    store_dir: Path | None = None
    keep_work: bool = False
    # artifacts larger than this stay in the store only (a full run's models folder is ~18 GB)
    collect_max_bytes: int = 2 * 2**30
    console: TextIO | None = None
    repo_root: Path = REPO_ROOT


class StepFailed(Exception):
    """A step ended badly (non-zero exit, missing input or output): the run stops here."""


def resolve_parameters(workflow: WorkflowSpec, given: Mapping[str, str], soft: Mapping[str, str] | None = None) -> dict[str, str]:
    """Workflow parameters after `-p` overrides: unknown names, missing values and enum violations are errors."""
    declared = {p.name: p for p in workflow.parameters}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise KoloraError(f"unknown parameter '{unknown[0]}' for {workflow.name} (its parameters: {known})")
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
            raise KoloraError(f"parameter '{name}' of {workflow.name} has no value: pass -p {name}=VALUE")
        if spec.enum and value not in spec.enum:
            raise KoloraError(f"parameter '{name}' is '{value}'; allowed: {', '.join(spec.enum)}")
        values[name] = value
    return values


def new_run_id(workflow_name: str) -> str:
    return f"{workflow_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_workflow(options: RunOptions) -> RunResult:
    """Run the template end to end; returns the result (status Failed on a step failure) and prints the summary.

    Template and configuration errors found before or during the run raise `KoloraError` (after the
    summary of what did run has been written); a failing step does not raise: see `RunResult.failed`.
    """
    console = options.console or sys.stdout
    # a relative template path is looked up in the working directory, then in the repo root
    template_path = options.template
    if not template_path.is_absolute() and not template_path.exists():
        template_path = options.repo_root / template_path
    workflow = load_workflow(template_path)
    parameters = resolve_parameters(workflow, options.parameters, options.soft_parameters)
    engine = get_engine(options.engine, options.repo_root)

    store_dir = options.store_dir or options.runs_dir / STORE_DIRNAME
    store_cm = EmbeddedS3(store_dir, options.embedded_bucket) if options.s3 is None else contextlib.nullcontext(options.s3)
    started = time.monotonic()
    with store_cm as settings:
        store = S3Store(settings)
        store.ensure_bucket()  # before anything is written: a dead endpoint costs one line and no run directory
        runs_dir = options.runs_dir.resolve()
        run_id = new_run_id(workflow.name)
        while (runs_dir / run_id).exists():
            run_id = new_run_id(workflow.name)
        run_dir = runs_dir / run_id
        (run_dir / "logs").mkdir(parents=True)
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
            changed=tuple(
                p.name for p in workflow.parameters if parameters[p.name] != (p.value if p.value is not None else p.default)
            ),
        )
        executor = _Executor(
            workflow, parameters, run_id, store, engine, run_dir, options.keep_work, options.collect_max_bytes, console, result
        )
        error: KoloraError | None = None
        try:
            print(f"kolora run: {run_id} ({workflow.name}, engine {engine.name}, {settings.label})", file=console)
            executor.run()
        except StepFailed:
            pass
        except KoloraError as exc:
            error = exc
            result.error = str(exc)
        except BaseException:  # Ctrl-C (the engine has stopped the step) or a crash: record, then re-raise
            for node in result.nodes:
                if node.phase == "Pending":
                    node.phase, node.message = "Failed", "interrupted"
            result.status, result.duration = "Failed", time.monotonic() - started
            _best_effort(lambda: write_summary(result))
            raise
        result.status = "Succeeded" if result.failed is None and result.error is None else "Failed"
        _best_effort(executor.collect, result.warnings, "collecting outputs")
        if result.ok:
            try:
                executor.promote(parameters.get(PREFIX_PARAMETER, DEFAULT_PREFIX))
            except KoloraError as exc:
                error = KoloraError(f"promotion: {exc}")
                result.error, result.status = str(error), "Failed"
        if settings.embedded:
            _best_effort(executor.forget_uploads, result.warnings, "cleaning the embedded store")
    if result.ok and not options.keep_work:
        shutil.rmtree(executor.work_dir, ignore_errors=True)
    result.duration = time.monotonic() - started
    print(write_summary(result), end="", file=console)
    if error is not None:
        raise error
    return result


def failure_report(result: RunResult, lines: int = LOG_TAIL) -> str:
    """`kolora run: step <node> failed (exit N); last lines of its log:` + the tail, for the CLI's stderr."""
    node = result.failed
    if node is None:
        return ""
    why = f"exit {node.exit_code}" if node.exit_code is not None and node.exit_code > 0 else node.message
    head = f"kolora run: step {node.node} failed ({why})"
    tail: list[str] = []
    if node.log is not None and node.log.is_file():
        with node.log.open(encoding="utf-8", errors="replace") as fh:
            tail = [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    if not tail:
        return head
    return head + "; last lines of its log:\n" + "\n".join(f"  {line}" for line in tail)


# --- the executor ---------------------------------------------------------------------------------------------------


@dataclass
class _TaskState:
    outcome: TaskOutcome
    nodes: list[NodeRecord]
    fanned_out: bool


class _Executor:
    """One run: the DAG walk, each step's inputs/outputs through S3, and the final copy to runs/<run-id>/."""

    def __init__(
        self,
        workflow: WorkflowSpec,
        parameters: dict[str, str],
        run_id: str,
        store: S3Store,
        engine: Engine,
        run_dir: Path,
        keep_work: bool,
        collect_max_bytes: int,
        console: TextIO,
        result: RunResult,
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.store = store
        self.engine = engine
        self.run_dir = run_dir
        self.work_dir = run_dir / ".work"
        self.keep_work = keep_work
        self.collect_max_bytes = collect_max_bytes
        self.console = console
        self.result = result
        self.nodes = result.nodes
        self.uploaded: list[str] = []
        self._print_lock = threading.Lock()
        self.global_scope = {
            "workflow.name": run_id,
            "workflow.uid": str(uuid.uuid4()),
            "workflow.namespace": "local",
            "workflow.mainEntrypoint": workflow.entrypoint,
            **{f"workflow.parameters.{k}": v for k, v in parameters.items()},
        }

    def say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self.console, flush=True)

    # --- walking ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        entry = self.workflow.template(self.workflow.entrypoint)
        # Argo passes spec.arguments to the entrypoint's inputs by name
        given = {k.removeprefix("workflow.parameters."): v for k, v in self.global_scope.items() if k.startswith("workflow.p")}
        if entry.kind != "dag":
            node = NodeRecord(node=entry.name, task=entry.name, display=entry.name, template=entry.name)
            self.nodes.append(node)
            self._run_step(node, entry, given, {}, dict(self.global_scope))
            return
        for spec in entry.input_parameters:
            value = given.get(spec.name, spec.value if spec.value is not None else spec.default)
            if value is None:
                raise KoloraError(f"template '{entry.name}': input parameter '{spec.name}' has no value")
            self.global_scope[f"inputs.parameters.{spec.name}"] = value
        self._run_dag(entry)

    def _run_dag(self, dag: TemplateSpec) -> None:
        where = f"template '{dag.name}'"
        tasks = topological_order(dag.tasks, where)
        if dag.target:
            wanted = _ancestors_and_self(dag.tasks, dag.target)
            tasks = [t for t in tasks if t.name in wanted]
        by_name = {t.name: t for t in dag.tasks}
        states: dict[str, _TaskState] = {}
        for task in tasks:
            if task.depends and not task.depends.evaluate({n: states[n].outcome for n in task.dependencies}):
                node = self._new_node(task, task.name, task.name, "Omitted", f"depends '{task.depends.text}' not met")
                node.parameters = _defaults(self.workflow.template(task.template).output_parameters)
                states[task.name] = _TaskState(TaskOutcome("Omitted"), [node], fanned_out=False)
                self.say(f"--- {task.name}: Omitted (depends '{task.depends.text}' not met)")
                continue
            if task.name == PROMOTE_TASK:  # replaced by `promote()` after the run: the store is this run's own
                node = self._new_node(task, task.name, task.name, "Skipped", "the local runner promotes after the run")
                states[task.name] = _TaskState(TaskOutcome("Skipped"), [node], fanned_out=False)
                self.say(f"--- {task.name}: Skipped (the local runner publishes the release itself after the run)")
                continue
            ancestors = _ancestors_and_self(dag.tasks, [task.name]) - {task.name}
            scope = dict(self.global_scope)
            for name in ancestors:
                scope.update(_task_scope(name, states[name], self.workflow.template(by_name[name].template)))
            hint = _hinter(task, by_name, ancestors, states)
            states[task.name] = self._run_task(task, scope, hint, states, ancestors)

    def _run_task(
        self, task: TaskSpec, scope: dict[str, str], hint: Any, states: dict[str, _TaskState], ancestors: set[str]
    ) -> _TaskState:
        template = self.workflow.template(task.template)
        items = self._items(task, scope, hint) if task.fans_out else [None]
        nodes: list[NodeRecord] = []
        for index, item in enumerate(items):
            item_scope = dict(scope)
            node_id, display = task.name, task.name
            if task.fans_out:
                node_id, display = f"{task.name}.{index}", f"{task.name}({index}:{_item_label(item)})"
                item_scope.update(_item_scope(item))
            node_where = f"task '{display}'"
            if task.when is not None:
                condition = substitute(task.when, item_scope, node_where, hint)
                if not evaluate_when(condition, node_where):
                    node = self._new_node(task, node_id, display, "Skipped", f"when '{condition}' evaluated false")
                    node.parameters = _defaults(template.output_parameters)
                    nodes.append(node)
                    self.say(f"--- {display}: Skipped (when '{condition}' evaluated false)")
                    continue
            params = {name: substitute(value, item_scope, node_where, hint) for name, value in task.parameters}
            sources = {a.name: self._artifact_source(a, item_scope, node_where, hint, states, ancestors) for a in task.artifacts}
            node = self._new_node(task, node_id, display, "Pending", "")
            nodes.append(node)
            self._run_step(node, template, params, sources, dict(self.global_scope))
        outcome = TaskOutcome("Succeeded", tuple(n.phase for n in nodes)) if task.fans_out else TaskOutcome(nodes[0].phase)
        return _TaskState(outcome, nodes, task.fans_out)

    def _items(self, task: TaskSpec, scope: dict[str, str], hint: Any) -> list[Any]:
        where = f"task '{task.name}'"
        if task.with_items is not None:
            return [_substitute_item(i, scope, where, hint) for i in task.with_items]
        if task.with_param is not None:
            text = substitute(task.with_param, scope, where, hint)
            try:
                items = json.loads(text)
            except ValueError:
                raise KoloraError(f"{where}: withParam value could not be parsed as a JSON list: {text[:80]}") from None
            if not isinstance(items, list):
                raise KoloraError(f"{where}: withParam value is not a JSON list: {text[:80]}")
            return items
        seq = task.with_sequence
        assert seq is not None
        values = {k: substitute(v, scope, where, hint) if v is not None else None for k, v in vars(seq).items()}
        return _sequence(values, where)

    def _artifact_source(
        self, art: ArtifactSpec, scope: dict[str, str], where: str, hint: Any, states: dict[str, _TaskState], ancestors: set[str]
    ) -> ArtifactSpec | ArtifactRef | None:
        """A task's artifact argument, resolved: an S3 location, raw data, or None (optional and absent)."""
        if art.from_ is None:
            return ArtifactSpec(
                name=art.name,
                raw_data=substitute(art.raw_data, scope, where, hint) if art.raw_data is not None else None,
                s3_key=substitute(art.s3_key, scope, where, hint) if art.s3_key is not None else None,
                optional=art.optional,
            )
        names = variables_in(art.from_)
        parts = names[0].split(".") if len(names) == 1 and art.from_.strip().startswith("{{") else []
        if len(parts) != 5 or parts[0] != "tasks" or parts[2:4] != ["outputs", "artifacts"]:
            raise KoloraError(
                f"{where}: artifact '{art.name}' from '{art.from_}': the local runner supports only "
                "from: '{{tasks.<task>.outputs.artifacts.<name>}}'"
            )
        source_task, source_art = parts[1], parts[4]
        if source_task not in ancestors:
            raise KoloraError(
                f"{where}: artifact '{art.name}' comes from task '{source_task}', which is not among its dependencies"
            )
        state = states[source_task]
        if state.fanned_out:
            raise KoloraError(f"{where}: artifact '{art.name}' comes from fanned-out task '{source_task}'; not supported")
        ref = state.nodes[0].artifacts.get(source_art)
        if ref is None:
            if art.optional:
                return None
            phase = state.nodes[0].phase
            why = f"it was {phase}" if phase != "Succeeded" else f"it has no output artifact '{source_art}'"
            raise KoloraError(f"{where}: artifact '{art.name}' comes from task '{source_task}', but {why}")
        return ref

    # --- one step -----------------------------------------------------------------------------------------------

    def _new_node(self, task: TaskSpec, node_id: str, display: str, phase: str, message: str) -> NodeRecord:
        node = NodeRecord(node=node_id, task=task.name, display=display, template=task.template, phase=phase, message=message)
        self.nodes.append(node)
        return node

    def _run_step(
        self,
        node: NodeRecord,
        template: TemplateSpec,
        params: dict[str, str],
        sources: dict[str, ArtifactSpec | ArtifactRef | None],
        scope: dict[str, str],
    ) -> None:
        where = f"task '{node.display}'"
        assert template.container is not None
        # 1. inputs.parameters, then everything in the template that may use them
        for spec in template.input_parameters:
            value = params.get(spec.name, spec.value if spec.value is not None else spec.default)
            if value is None:
                raise KoloraError(f"{where}: input parameter '{spec.name}' of template '{template.name}' has no value")
            if spec.enum and value not in spec.enum:
                raise KoloraError(f"{where}: input parameter '{spec.name}' is '{value}'; allowed: {', '.join(spec.enum)}")
            scope[f"inputs.parameters.{spec.name}"] = value
        for name in sorted(set(params) - {p.name for p in template.input_parameters}):
            self.result.warnings.append(f"{where}: argument '{name}' is not an input of template '{template.name}'; ignored")
        path_scope = dict(scope)
        in_paths = {a.name: substitute(a.path or "", path_scope, where) for a in template.input_artifacts}
        out_paths = {a.name: substitute(a.path or "", path_scope, where) for a in template.output_artifacts}
        param_paths = {
            p.name: substitute(p.value_from_path, path_scope, where) for p in template.output_parameters if p.value_from_path
        }
        scope.update({f"inputs.artifacts.{k}.path": v for k, v in in_paths.items()})
        scope.update({f"outputs.artifacts.{k}.path": v for k, v in out_paths.items()})
        scope.update({f"outputs.parameters.{k}.path": v for k, v in param_paths.items()})
        scope["pod.name"] = scope["node.name"] = f"{self.run_id}-{node.node}"

        container = template.container
        argv = [substitute(a, scope, where) for a in (*container.command, *container.args)]
        image = substitute(container.image, scope, where)
        env = {k: substitute(v, scope, where) for k, v in container.env}
        for name in container.skipped_env:
            self.say(
                f"--- {node.display}: warning: env {name} comes from a secret/config map; not set by engine {self.engine.name}"
            )

        scratch = self.work_dir / node.node
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        node.scratch = scratch
        node.log = self.run_dir / "logs" / f"{node.node}.log"
        script = substitute(container.source, scope, where) if container.source is not None else None

        started = time.monotonic()
        self.say(f"--- {node.display}: running (template {template.name})")
        try:
            # 2. input artifacts, downloaded through S3 into the step's paths
            for art in template.input_artifacts:
                self._load_input(node, art, in_paths[art.name], sources.get(art.name), scratch, scope, started)
            for path in [*out_paths.values(), *param_paths.values()]:
                _host_path(path, scratch, where)  # refuse paths outside /kolora before the step runs, not after
            # 3. the container itself, retried as retryStrategy.limit says
            stage = stage_of(argv)  # what the engine may give the step: GPUs to GPU stages, a network to downloads
            gpu, network = stage is not None and stage.gpu, stage is not None and stage.downloads
            step = StepRun(
                node=node.node, image=image, argv=tuple(argv), env=env, scratch=scratch, script=script, gpu=gpu, network=network
            )
            code = self._execute(node, step, template)
            node.exit_code = code
            if code != 0:
                self._fail(node, f"exit {code}" if code > 0 else f"killed by {_signal_name(-code)}", started)
            # 4. outputs: parameters from files, artifacts uploaded under the run prefix
            for spec in template.output_parameters:
                node.parameters[spec.name] = self._output_parameter(node, spec, param_paths, scratch, where, started)
            for art in template.output_artifacts:
                ref = self._store_output(node, art, out_paths[art.name], scope, scratch, where, started)
                if ref is not None:
                    node.artifacts[art.name] = ref
        except KoloraError:
            node.phase, node.duration = "Failed", time.monotonic() - started
            raise
        node.phase, node.duration = "Succeeded", time.monotonic() - started
        self.say(f"--- {node.display}: Succeeded in {node.duration:.1f}s")
        if not self.keep_work:
            shutil.rmtree(scratch, ignore_errors=True)
            node.scratch = None

    def _execute(self, node: NodeRecord, step: StepRun, template: TemplateSpec) -> int:
        """Run the container, retrying as its retryStrategy says; stdout's tail becomes outputs.result."""
        assert node.log is not None
        stdout: deque[str] = deque()
        size = [0]
        with node.log.open("a", encoding="utf-8") as log:

            def sink(stream: str, line: str) -> None:
                with self._print_lock:
                    log.write(line + "\n")
                    log.flush()
                    print(f"[{node.node}] {line}", file=self.console, flush=True)
                    if stream == "stdout":
                        stdout.append(line)
                        size[0] += len(line) + 1
                        while size[0] > RESULT_LIMIT and stdout:
                            size[0] -= len(stdout.popleft()) + 1

            retries, attempt = template.retry_limit, 0
            while True:
                began = time.monotonic()
                code = self.engine.run(step, sink)
                if code == 0 or attempt >= retries:
                    break
                where = f"task '{node.display}'"
                if not should_retry(template.retry_policy, template.retry_expression, code, time.monotonic() - began, where):
                    break
                attempt += 1
                stdout.clear()
                size[0] = 0
                sink("stderr", f"--- kolora run: exit {code}; retry {attempt}/{retries} (retryStrategy of {template.name})")
        node.result = "\n".join(stdout).strip()
        return code

    def _fail(self, node: NodeRecord, message: str, started: float) -> None:
        node.phase, node.message, node.duration = "Failed", message, time.monotonic() - started
        self.result.failed = node
        self.say(f"--- {node.display}: Failed ({message})")
        raise StepFailed(message)

    def _load_input(
        self,
        node: NodeRecord,
        art: ArtifactSpec,
        path: str,
        arg: ArtifactSpec | ArtifactRef | None,
        scratch: Path,
        scope: dict[str, str],
        started: float,
    ) -> None:
        """Put one input artifact at its path: the task's argument wins over the template's own source."""
        where = f"task '{node.display}'"
        source: ArtifactSpec | ArtifactRef | None = arg
        if isinstance(arg, ArtifactSpec) and not arg.has_source:
            source = None
        if source is None and art.has_source:
            source = ArtifactSpec(
                name=art.name,
                raw_data=substitute(art.raw_data, scope, where) if art.raw_data is not None else None,
                s3_key=substitute(art.s3_key, scope, where) if art.s3_key is not None else None,
            )
        optional = art.optional or (isinstance(arg, ArtifactSpec) and arg.optional)
        if source is None:
            if optional:
                return
            raise KoloraError(f"{where}: input artifact '{art.name}' has no source: pass it in the task's arguments.artifacts")
        host = _host_path(path, scratch, where)
        if isinstance(source, ArtifactSpec) and source.raw_data is not None:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(source.raw_data, encoding="utf-8")
            return
        key = source.key if isinstance(source, ArtifactRef) else source.s3_key or ""
        try:
            self.store.download(key, host)
        except ArtifactNotFound as exc:
            if optional:
                return
            self._fail(node, f"input artifact '{art.name}': {exc}", started)

    def _output_parameter(
        self, node: NodeRecord, spec: ParamSpec, paths: dict[str, str], scratch: Path, where: str, started: float
    ) -> str:
        if spec.value_from_path is None:
            return spec.value or ""
        host = _host_path(paths[spec.name], scratch, where)
        if host.is_file():
            return host.read_text(encoding="utf-8", errors="replace").strip()
        if spec.value_from_default is not None:
            return spec.value_from_default
        self._fail(node, f"output parameter '{spec.name}': {paths[spec.name]} was not written and has no default", started)
        return ""

    def _store_output(
        self, node: NodeRecord, art: ArtifactSpec, path: str, scope: dict[str, str], scratch: Path, where: str, started: float
    ) -> ArtifactRef | None:
        host = _host_path(path, scratch, where)
        if not host.exists():
            if art.optional:
                return None
            self._fail(node, f"output artifact '{art.name}': {path} was not written", started)
        if art.s3_key is not None:
            key = substitute(art.s3_key, scope, where).strip("/")
        else:
            key = f"{self.run_id}/{node.node}/{art.name}" + (".tgz" if art.archive else "")
        self.uploaded += self.store.upload(host, key, archive=art.archive)
        return ArtifactRef(key=key, archive=art.archive, path=path)

    # --- after the run ------------------------------------------------------------------------------------------

    def collect(self) -> None:
        """Copy every output artifact to runs/<id>/<node>/<artifact>/, then flatten the summary artifacts."""
        for node in self.nodes:
            for name, ref in node.artifacts.items():
                size = self.store.size(ref.key)
                if size > self.collect_max_bytes:
                    self.result.warnings.append(
                        f"{node.node}/{name} ({size / 2**30:.1f} GiB) left in the store at s3://{self.store.bucket}/{ref.key}: "
                        "larger than --collect-max-gb"
                    )
                    continue
                dest = self.run_dir / node.node / name
                tmp = self.run_dir / node.node / f".{name}.collect"
                for stale in (dest, tmp):
                    _remove(stale)
                kind = self.store.download(ref.key, tmp)
                if kind == "dir":
                    tmp.rename(dest)
                else:
                    dest.mkdir(parents=True)
                    tmp.rename(dest / (PurePosixPath(ref.path).name or name))
        self._flatten()

    def _flatten(self) -> None:
        spec = self.workflow.annotations.get(SUMMARY_ANNOTATION, "")
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            task, _, artifact = entry.partition("/")
            matches = [n for n in self.nodes if n.task == task and artifact in n.artifacts]
            if not matches:
                if self.result.failed is None and not any(
                    n.task == task and n.phase in ("Skipped", "Omitted") for n in self.nodes
                ):
                    self.result.warnings.append(f"{SUMMARY_ANNOTATION}: '{entry}' was not produced by this run")
                continue
            for node in matches:
                src = self.run_dir / node.node / artifact
                for item in sorted(src.iterdir()):
                    if item.name == COMPLETE_MARKER:
                        continue
                    target = self.run_dir / item.name
                    if target.exists():
                        _remove(target)
                    if item.is_dir():
                        shutil.copytree(item, target)
                    else:
                        shutil.copy2(item, target)

    def promote(self, prefix: str) -> None:
        """Publish a Succeeded `publish` task's release into this run's store (what Argo's `promote` step does)."""
        node = next((n for n in self.nodes if n.task == PUBLISH_TASK and n.phase == "Succeeded"), None)
        if node is None or RELEASE_ARTIFACT not in node.artifacts:
            return
        release = self.run_dir / node.node / RELEASE_ARTIFACT
        if not release.is_dir():
            release = self.work_dir / "promote-release"
            self.store.download(node.artifacts[RELEASE_ARTIFACT].key, release)
        line = promote(self.store, release, prefix)
        if self.result.store.startswith("embedded"):
            line += " (embedded store: kept for the next run)"
        node.message = line
        self.say(f"kolora run: {line}")

    def forget_uploads(self) -> None:
        """Keep the embedded store to what outlives a run (releases): the run's artifacts are in runs/<id>/ now."""
        if self.uploaded:
            self.store.delete_prefix(f"{self.run_id}/")
            for key in self.uploaded:
                if not key.startswith(f"{self.run_id}/"):
                    self.store.delete_prefix(key)


# --- helpers --------------------------------------------------------------------------------------------------------


def _host_path(path: str, scratch: Path, where: str) -> Path:
    """The host file behind a container path; only /kolora is mounted, as in the images."""
    pure = PurePosixPath(path)
    root = PurePosixPath(CONTAINER_ROOT)
    if not pure.is_absolute() or (pure != root and root not in pure.parents) or ".." in pure.parts:
        raise KoloraError(f"{where}: path '{path}' is outside {CONTAINER_ROOT}; the local runner maps only {CONTAINER_ROOT}")
    return scratch.joinpath(*pure.relative_to(root).parts)


def _ancestors_and_self(tasks: tuple[TaskSpec, ...], names: Any) -> set[str]:
    by_name = {t.name: t for t in tasks}
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += list(by_name[name].dependencies)
    return seen


def _defaults(outputs: tuple[ParamSpec, ...]) -> dict[str, str]:
    """Output parameters of a node that did not run: those with valueFrom.default (Argo v3.7.16+/v4.0.7+)."""
    return {p.name: p.value_from_default for p in outputs if p.value_from_default is not None}


def _task_scope(name: str, state: _TaskState, template: TemplateSpec) -> dict[str, str]:
    scope = {f"tasks.{name}.status": state.outcome.phase}
    if not state.fanned_out:
        node = state.nodes[0]
        scope.update({f"tasks.{name}.outputs.parameters.{k}": v for k, v in node.parameters.items()})
        if node.result is not None:
            scope[f"tasks.{name}.outputs.result"] = node.result
        return scope
    for spec in template.output_parameters:
        values = [n.parameters[spec.name] for n in state.nodes if spec.name in n.parameters]
        scope[f"tasks.{name}.outputs.parameters.{spec.name}"] = json.dumps(values)
    results = [n.result for n in state.nodes if n.result is not None]
    scope[f"tasks.{name}.outputs.result"] = json.dumps(results)
    return scope


def _hinter(task: TaskSpec, by_name: Mapping[str, TaskSpec], ancestors: set[str], states: Mapping[str, _TaskState]) -> Any:
    def hint(variable: str) -> str:
        parts = variable.split(".")
        if parts[0] == "tasks" and len(parts) > 1:
            other = parts[1]
            if other not in by_name:
                return f" (there is no task '{other}')"
            if other not in ancestors:
                return f" (task '{other}' is not among the dependencies of '{task.name}')"
            phase = states[other].outcome.phase
            if phase in ("Skipped", "Omitted") and len(parts) > 4 and parts[3] == "parameters":
                return f" (task '{other}' was {phase} and output '{parts[4]}' has no valueFrom.default)"
        if parts[0] == "item":
            return " ({{item}} exists only in tasks with withItems/withParam/withSequence)"
        return ""

    return hint


def _item_scope(item: Any) -> dict[str, str]:
    scope = {"item": item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))}
    if isinstance(item, dict):
        for key, value in item.items():
            scope[f"item.{key}"] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return scope


def _item_label(item: Any) -> str:
    if isinstance(item, dict):
        return ",".join(f"{k}:{v}" for k, v in sorted(item.items()))
    return item if isinstance(item, str) else json.dumps(item)


def _substitute_item(item: Any, scope: dict[str, str], where: str, hint: Any) -> Any:
    if isinstance(item, str):
        return substitute(item, scope, where, hint)
    if isinstance(item, dict):
        return {k: _substitute_item(v, scope, where, hint) for k, v in item.items()}
    return item


def _sequence(values: dict[str, str | None], where: str) -> list[str]:
    """Argo's withSequence: `count` (from `start`, default 0) or `start`..`end` inclusive, optional printf format."""
    try:
        start = int(values["start"] or 0)
        if values["count"] not in (None, ""):
            if values["end"] not in (None, ""):
                raise KoloraError(f"{where}: withSequence takes count or end, not both")
            numbers = list(range(start, start + int(values["count"] or 0)))
        elif values["end"] not in (None, ""):
            end = int(values["end"] or 0)
            numbers = list(range(start, end + 1)) if end >= start else list(range(start, end - 1, -1))
        else:
            raise KoloraError(f"{where}: withSequence needs count or end")
    except ValueError:
        raise KoloraError(f"{where}: withSequence count/start/end must be integers, got {values}") from None
    fmt = values.get("format")
    if fmt:
        try:
            return [fmt % n for n in numbers]
        except (TypeError, ValueError):
            raise KoloraError(f"{where}: withSequence format '{fmt}' is not a printf format for an integer") from None
    return [str(n) for n in numbers]


def _point_latest(runs_dir: Path, run_id: str) -> None:
    """runs/latest -> the newest run, replaced atomically so a concurrent reader never sees it missing."""
    link = runs_dir / "latest"
    tmp = runs_dir / f".latest-{os.getpid()}-{secrets.token_hex(2)}"
    tmp.symlink_to(run_id, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _best_effort(action: Any, warnings: list[str] | None = None, what: str = "") -> None:
    """After-run chores must not hide the run's own outcome; their failures become warnings."""
    try:
        action()
    except (KoloraError, OSError) as exc:
        if warnings is not None:
            warnings.append(f"{what}: {exc}")
