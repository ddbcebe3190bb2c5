"""Parse a rendered Argo (Cluster)WorkflowTemplate / Workflow into typed objects the local runner can execute.

Why strict: a field the runner silently ignored but Argo honours would make a local run pass where the
cluster run behaves differently. So every field is either supported, known to be scheduling-only (ignored:
resources, tolerations, volumes, ...), or refused with a message naming the template and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kolora_core.config.files import read_text
from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import parse_depends
from kolora_core.runner.fields import (
    UNSUPPORTED_HINT,
    artifact,
    as_list,
    check_keys,
    container,
    mapping,
    named,
    param,
    retry_strategy,
    string,
    unique,
)
from kolora_core.runner.spec import SequenceSpec, TaskSpec, TemplateSpec, WorkflowSpec

WORKFLOW_KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "Workflow")

# Fields that only matter to the Kubernetes scheduler or the Argo controller's bookkeeping.
_SPEC_IGNORED = {
    "serviceAccountName", "automountServiceAccountToken", "executor", "podGC", "ttlStrategy", "volumes",
    "volumeClaimTemplates", "volumeClaimGC", "nodeSelector", "tolerations", "affinity", "securityContext",
    "podSpecPatch", "activeDeadlineSeconds", "parallelism", "imagePullSecrets", "podMetadata", "workflowMetadata",
    "artifactRepositoryRef", "priority", "podPriority", "podPriorityClassName", "schedulerName", "hostNetwork",
    "dnsPolicy", "dnsConfig", "hostAliases", "podDisruptionBudget", "metrics", "archiveLogs", "artifactGC",
    "retryStrategy", "synchronization", "shutdown",
}  # fmt: skip
_TEMPLATE_IGNORED = {
    "metadata", "tolerations", "nodeSelector", "affinity", "securityContext", "podSpecPatch", "activeDeadlineSeconds",
    "volumes", "serviceAccountName", "automountServiceAccountToken", "priorityClassName", "priority", "schedulerName",
    "hostAliases", "timeout", "memoize", "synchronization", "archiveLocation", "parallelism", "failFast", "metrics",
    "executor",
}  # fmt: skip


# --- loading ------------------------------------------------------------------------------------------------------


def load_workflow(path: Path) -> WorkflowSpec:
    """Read a rendered workflow YAML (one document of a supported kind) and validate it."""
    if not path.exists():
        raise KoloraError(f"workflow template {path} not found: render it first (kolora render) or pass --template")
    text = read_text(path, "workflow template", "pass --template a rendered workflow YAML (kolora render writes them)")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise KoloraError(f"workflow template {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    workflows = [d for d in docs if isinstance(d, dict) and d.get("kind") in WORKFLOW_KINDS]
    if len(workflows) != 1:
        raise KoloraError(
            f"workflow template {path} holds {len(workflows)} documents of kind {'/'.join(WORKFLOW_KINDS)}; expected one"
        )
    return parse_workflow(workflows[0], source=str(path))


def parse_workflow(doc: Mapping[str, Any], source: str = "<string>") -> WorkflowSpec:
    """Validate one workflow document (already loaded from YAML)."""
    where = source
    kind = str(doc.get("kind", ""))
    if kind not in WORKFLOW_KINDS:
        raise KoloraError(f"{where}: kind '{kind}' is not one of {', '.join(WORKFLOW_KINDS)}")
    meta = mapping(doc.get("metadata") or {}, f"{where}: metadata")
    name = str(meta.get("name") or str(meta.get("generateName") or "").rstrip("-") or "workflow")
    annotations = {str(k): str(v) for k, v in mapping(meta.get("annotations") or {}, f"{where}: annotations").items()}
    spec = mapping(doc.get("spec"), f"{where}: spec")
    check_keys(spec, {"entrypoint", "arguments", "templates", "onExit"}, _SPEC_IGNORED, f"{where}: spec")

    arguments = mapping(spec.get("arguments") or {}, f"{where}: spec.arguments")
    check_keys(arguments, {"parameters"}, set(), f"{where}: spec.arguments")
    parameters = tuple(
        param(p, f"{where}: spec.arguments.parameters")
        for p in as_list(arguments.get("parameters"), f"{where}: arguments.parameters")
    )
    unique((p.name for p in parameters), f"{where}: spec.arguments.parameters")

    templates: dict[str, TemplateSpec] = {}
    for raw in as_list(spec.get("templates"), f"{where}: spec.templates"):
        tmpl = _template(raw, where)
        if tmpl.name in templates:
            raise KoloraError(f"{where}: template '{tmpl.name}' is defined twice")
        templates[tmpl.name] = tmpl
    entrypoint = str(spec.get("entrypoint") or "")
    if entrypoint not in templates:
        raise KoloraError(f"{where}: spec.entrypoint '{entrypoint}' names no template (have: {', '.join(templates)})")
    on_exit = str(spec["onExit"]) if spec.get("onExit") else None
    if on_exit is not None and on_exit not in templates:
        raise KoloraError(f"{where}: spec.onExit '{on_exit}' names no template")
    workflow = WorkflowSpec(name, kind, entrypoint, parameters, templates, annotations, source, on_exit)
    _validate_dags(workflow)
    return workflow


# --- pieces -------------------------------------------------------------------------------------------------------


def _template(raw: Any, source: str) -> TemplateSpec:
    raw, name = named(raw, f"{source}: spec.templates", source, "a template")
    where = f"{source}: template '{name}'"
    check_keys(raw, {"name", "container", "script", "dag", "inputs", "outputs", "retryStrategy"}, _TEMPLATE_IGNORED, where)
    bodies = [k for k in ("container", "script", "dag") if k in raw]
    if len(bodies) != 1:
        raise KoloraError(f"{where}: needs exactly one of container, script or dag (has {', '.join(bodies) or 'none'})")
    kind = bodies[0]

    inputs = mapping(raw.get("inputs") or {}, f"{where}: inputs")
    check_keys(inputs, {"parameters", "artifacts"}, set(), f"{where}: inputs")
    outputs = mapping(raw.get("outputs") or {}, f"{where}: outputs")
    check_keys(outputs, {"parameters", "artifacts"}, {"result", "exitCode"}, f"{where}: outputs")
    in_params = tuple(
        param(p, f"{where}: inputs.parameters") for p in as_list(inputs.get("parameters"), f"{where}: inputs.parameters")
    )
    in_arts = tuple(
        artifact(a, f"{where}: inputs.artifacts", need_path=kind != "dag")
        for a in as_list(inputs.get("artifacts"), f"{where}: inputs.artifacts")
    )
    out_params = tuple(
        param(p, f"{where}: outputs.parameters", output=True)
        for p in as_list(outputs.get("parameters"), f"{where}: outputs.parameters")
    )
    out_arts = tuple(
        artifact(a, f"{where}: outputs.artifacts", need_path=True)
        for a in as_list(outputs.get("artifacts"), f"{where}: outputs.artifacts")
    )
    for group, items in (("inputs.parameters", in_params), ("inputs.artifacts", in_arts)):
        unique((i.name for i in items), f"{where}: {group}")
    for group, items in (("outputs.parameters", out_params), ("outputs.artifacts", out_arts)):
        unique((i.name for i in items), f"{where}: {group}")
    for art in out_arts:
        if art.from_ is not None or art.raw_data is not None:
            raise KoloraError(f"{where}: output artifact '{art.name}' cannot have from/raw; {UNSUPPORTED_HINT}")

    retry_limit, retry_policy, retry_expression = retry_strategy(raw.get("retryStrategy") or {}, f"{where}: retryStrategy")

    if kind == "dag":
        if out_params or out_arts:
            raise KoloraError(f"{where}: DAG template outputs are not supported; {UNSUPPORTED_HINT}")
        dag = mapping(raw["dag"], f"{where}: dag")
        check_keys(dag, {"tasks", "target"}, {"failFast"}, f"{where}: dag")
        tasks = tuple(_task(t, where) for t in as_list(dag.get("tasks"), f"{where}: dag.tasks"))
        unique((t.name for t in tasks), f"{where}: dag.tasks")
        target = tuple(str(dag.get("target") or "").split())
        return TemplateSpec(name, "dag", in_params, in_arts, tasks=tasks, target=target)
    return TemplateSpec(
        name,
        "container" if kind == "container" else "script",
        in_params,
        in_arts,
        out_params,
        out_arts,
        container=container(raw[kind], f"{where}: {kind}", script=kind == "script"),
        retry_limit=retry_limit,
        retry_policy=retry_policy,
        retry_expression=retry_expression,
    )


def _task(raw: Any, template_where: str) -> TaskSpec:
    raw, name = named(raw, f"{template_where}: dag.tasks", template_where, "a DAG task")
    where = f"{template_where}: task '{name}'"
    if "." in name or "/" in name:
        raise KoloraError(f"{where}: task names may not contain '.' or '/'")
    check_keys(
        raw,
        {"name", "template", "dependencies", "depends", "arguments", "when", "withItems", "withParam", "withSequence"},
        set(),
        where,
    )
    if not raw.get("template"):
        raise KoloraError(f"{where}: no template (templateRef and inline templates are not supported)")
    if "dependencies" in raw and "depends" in raw:
        raise KoloraError(f"{where}: use either dependencies or depends, not both (Argo refuses both)")
    depends_text = str(raw.get("depends") or "") or " && ".join(
        str(d) for d in as_list(raw.get("dependencies"), f"{where}: dependencies")
    )
    depends = parse_depends(depends_text, where) if depends_text.strip() else None
    loops = [k for k in ("withItems", "withParam", "withSequence") if k in raw]
    if len(loops) > 1:
        raise KoloraError(f"{where}: use only one of withItems, withParam, withSequence")
    arguments = mapping(raw.get("arguments") or {}, f"{where}: arguments")
    check_keys(arguments, {"parameters", "artifacts"}, set(), f"{where}: arguments")
    params: list[tuple[str, str]] = []
    for p in as_list(arguments.get("parameters"), f"{where}: arguments.parameters"):
        spec = param(p, f"{where}: arguments.parameters")
        params.append((spec.name, spec.value if spec.value is not None else (spec.default or "")))
    arts = tuple(
        artifact(a, f"{where}: arguments.artifacts", need_path=False)
        for a in as_list(arguments.get("artifacts"), f"{where}: arguments.artifacts")
    )
    unique((n for n, _ in params), f"{where}: arguments.parameters")
    unique((a.name for a in arts), f"{where}: arguments.artifacts")
    sequence = None
    if "withSequence" in raw:
        seq = mapping(raw["withSequence"], f"{where}: withSequence")
        check_keys(seq, {"count", "start", "end", "format"}, set(), f"{where}: withSequence")
        sequence = SequenceSpec(
            **{k: None if seq.get(k) is None else string(seq[k]) for k in ("count", "start", "end", "format")}
        )
    with_items = None
    if "withItems" in raw:
        with_items = tuple(as_list(raw["withItems"], f"{where}: withItems"))
    return TaskSpec(
        name=name,
        template=str(raw["template"]),
        depends=depends,
        when=string(raw["when"]) if raw.get("when") not in (None, "") else None,
        parameters=tuple(params),
        artifacts=arts,
        with_items=with_items,
        with_param=string(raw["withParam"]) if "withParam" in raw else None,
        with_sequence=sequence,
    )


# --- cross-checks -------------------------------------------------------------------------------------------------


def _validate_dags(workflow: WorkflowSpec) -> None:
    for tmpl in workflow.templates.values():
        if tmpl.kind != "dag":
            continue
        where = f"{workflow.source}: template '{tmpl.name}'"
        if tmpl.name != workflow.entrypoint:
            raise KoloraError(f"{where}: nested DAG templates are not supported; only the entrypoint may be a DAG")
        names = {t.name for t in tmpl.tasks}
        for task in tmpl.tasks:
            target = workflow.templates.get(task.template)
            if target is None:
                raise KoloraError(f"{where}: task '{task.name}' uses template '{task.template}', which does not exist")
            if target.kind == "dag":
                raise KoloraError(
                    f"{where}: task '{task.name}' calls DAG template '{task.template}'; nested DAGs are not supported"
                )
            for dep in task.dependencies:
                if dep not in names:
                    raise KoloraError(f"{where}: task '{task.name}' depends on '{dep}', which is not a task of this DAG")
        for target_name in tmpl.target:
            if target_name not in names:
                raise KoloraError(f"{where}: dag.target names '{target_name}', which is not a task of this DAG")
        topological_order(tmpl.tasks, where)
    if workflow.template(workflow.entrypoint).kind == "dag" and workflow.template(workflow.entrypoint).input_artifacts:
        raise KoloraError(f"{workflow.source}: inputs.artifacts on the entrypoint DAG are not supported")


def topological_order(tasks: Iterable[TaskSpec], where: str) -> list[TaskSpec]:
    """Tasks in dependency order, keeping the template's order among independent tasks; refuses cycles."""
    pending = list(tasks)
    done: set[str] = set()
    ordered: list[TaskSpec] = []
    while pending:
        ready = [t for t in pending if all(d in done for d in t.dependencies)]
        if not ready:
            cycle = ", ".join(t.name for t in pending)
            raise KoloraError(f"{where}: the DAG has a dependency cycle among tasks {cycle}")
        task = ready[0]
        ordered.append(task)
        done.add(task.name)
        pending.remove(task)
    return ordered
