"""The DAG walk: tasks in dependency order, `depends` and `when`, loops, and the onExit handler.

One task at a time (Argo runs independent tasks in parallel; the outcome is the same, only slower). A task
whose `depends` is false is Omitted, one whose `when` is false Skipped (their outputs: `valueFrom.default`).
A retried run (`retry.py`) keeps the nodes that succeeded before instead of running them.
After the entrypoint, `spec.onExit` runs whatever the outcome, with `{{workflow.status}}` and the workflow
outputs that steps exported (`globalName`); if it fails, a Succeeded run becomes Failed, as in Argo.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.runner.context import RunContext
from kolora_core.runner.expressions import TaskOutcome, evaluate_when, substitute, variables_in
from kolora_core.runner.loops import item_label, item_scope, loop_items
from kolora_core.runner.records import NodeRecord
from kolora_core.runner.retry import reuse
from kolora_core.runner.spec import ArtifactSpec, ParamSpec, TaskSpec, TemplateSpec
from kolora_core.runner.step import Source, StepExecutor
from kolora_core.runner.template import topological_order

EXIT_NODE = "onExit"


@dataclass
class _TaskState:
    outcome: TaskOutcome
    nodes: list[NodeRecord]
    fanned_out: bool


class DagWalker:
    """Runs the entrypoint, then the exit handler, recording every node in the run's result."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.steps = StepExecutor(ctx)

    def run_entrypoint(self) -> None:
        entry = self.ctx.workflow.template(self.ctx.workflow.entrypoint)
        # Argo passes spec.arguments to the entrypoint's inputs by name
        prefix = "workflow.parameters."
        given = {k.removeprefix(prefix): v for k, v in self.ctx.global_scope.items() if k.startswith(prefix)}
        if entry.kind == "dag":
            self._run_dag(entry, given)
        else:
            self._run_step(entry, entry.name, entry.name, entry.name, given, {})

    def run_exit_handler(self, status: str) -> None:
        """`spec.onExit`, if any, with `{{workflow.status}}` = Succeeded, Failed or Error."""
        name = self.ctx.workflow.on_exit
        if name is None:
            return
        self.ctx.global_scope["workflow.status"] = status
        self._run_step(self.ctx.workflow.template(name), EXIT_NODE, EXIT_NODE, f"{EXIT_NODE} ({name})", {}, {})

    def _run_step(
        self, template: TemplateSpec, node_id: str, task: str, display: str, params: dict[str, str], sources: dict[str, Source]
    ) -> NodeRecord:
        node = NodeRecord(node=node_id, task=task, display=display, template=template.name)
        self.ctx.result.nodes.append(node)
        if reuse(self.ctx, node, template, keep=node_id != EXIT_NODE):  # a retry keeps what succeeded; onExit reruns
            return node
        try:
            self.steps.run(node, template, params, sources)
        finally:
            self.ctx.save_record()  # each finished node on record, also a failed one: what a retry starts from
        return node

    def _run_dag(self, dag: TemplateSpec, params: dict[str, str]) -> None:
        where = f"template '{dag.name}'"
        inputs: dict[str, str] = {}
        for spec in dag.input_parameters:
            value = params.get(spec.name, spec.value if spec.value is not None else spec.default)
            if value is None:
                raise KoloraError(f"{where}: input parameter '{spec.name}' has no value")
            inputs[f"inputs.parameters.{spec.name}"] = value
        tasks = topological_order(dag.tasks, where)
        if dag.target:
            wanted = _ancestors_and_self(dag.tasks, dag.target)
            tasks = [t for t in tasks if t.name in wanted]
        by_name = {t.name: t for t in dag.tasks}
        states: dict[str, _TaskState] = {}
        for task in tasks:
            template = self.ctx.workflow.template(task.template)
            if task.depends and not task.depends.evaluate({n: states[n].outcome for n in task.dependencies}):
                why = f"depends '{task.depends.text}' not met"
                node = self._record(task, task.name, task.name, "Omitted", why)
                node.parameters = _defaults(template.output_parameters)
                states[task.name] = _TaskState(TaskOutcome("Omitted"), [node], fanned_out=False)
                self.ctx.say(f"--- {task.name}: Omitted ({why})")
                continue
            ancestors = _ancestors_and_self(dag.tasks, [task.name]) - {task.name}
            scope = {**self.ctx.global_scope, **inputs}
            for name in ancestors:
                scope.update(_task_scope(name, states[name], self.ctx.workflow.template(by_name[name].template)))
            states[task.name] = self._run_task(task, scope, _hinter(task, by_name, ancestors, states), states, ancestors)

    def _run_task(
        self, task: TaskSpec, scope: dict[str, str], hint: Any, states: dict[str, _TaskState], ancestors: set[str]
    ) -> _TaskState:
        template = self.ctx.workflow.template(task.template)
        items = loop_items(task, scope, hint) if task.fans_out else [None]
        nodes: list[NodeRecord] = []
        for index, item in enumerate(items):
            iteration = dict(scope)
            node_id, display = task.name, task.name
            if task.fans_out:
                node_id, display = f"{task.name}.{index}", f"{task.name}({index}:{item_label(item)})"
                iteration.update(item_scope(item))
            where = f"task '{display}'"
            if task.when is not None:
                condition = substitute(task.when, iteration, where, hint)
                if not evaluate_when(condition, where):
                    node = self._record(task, node_id, display, "Skipped", f"when '{condition}' evaluated false")
                    node.parameters = _defaults(template.output_parameters)
                    nodes.append(node)
                    self.ctx.say(f"--- {display}: Skipped (when '{condition}' evaluated false)")
                    continue
            params = {name: substitute(value, iteration, where, hint) for name, value in task.parameters}
            sources = {a.name: self._artifact_source(a, iteration, where, hint, states, ancestors) for a in task.artifacts}
            nodes.append(self._run_step(template, node_id, task.name, display, params, sources))
        outcome = TaskOutcome("Succeeded", tuple(n.phase for n in nodes)) if task.fans_out else TaskOutcome(nodes[0].phase)
        return _TaskState(outcome, nodes, task.fans_out)

    def _record(self, task: TaskSpec, node_id: str, display: str, phase: str, message: str) -> NodeRecord:
        node = NodeRecord(node_id, task.name, display, template=task.template, phase=phase, message=message)
        self.ctx.result.nodes.append(node)
        return node

    def _artifact_source(
        self, art: ArtifactSpec, scope: dict[str, str], where: str, hint: Any, states: dict[str, _TaskState], ancestors: set[str]
    ) -> Source:
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


def _ancestors_and_self(tasks: tuple[TaskSpec, ...], names: Iterable[str]) -> set[str]:
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
