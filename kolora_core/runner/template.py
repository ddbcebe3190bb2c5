"""Parse a rendered Argo (Cluster)WorkflowTemplate / Workflow into typed objects the local runner can execute.

Why strict: a field the runner silently ignored but Argo honours would make a local run pass where the
cluster run behaves differently. So every field is either supported, known to be scheduling-only (ignored:
resources, tolerations, volumes, ...), or refused with a message naming the template and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import RETRY_POLICIES, DependsExpr, parse_depends, should_retry

WORKFLOW_KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "Workflow")
UNSUPPORTED_HINT = "the local runner (kolora run) does not support it; run this workflow on Argo"

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
_CONTAINER_IGNORED = {
    "name", "imagePullPolicy", "resources", "volumeMounts", "securityContext", "workingDir", "ports",
    "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "tty", "stdin", "stdinOnce", "volumeDevices", "envFrom",
}  # fmt: skip
_ARTIFACT_IGNORED = {"mode", "recurseMode", "globalName", "archiveLogs", "artifactGC", "deleted", "description"}
_PARAM_IGNORED = {"globalName", "description"}


@dataclass(frozen=True)
class ParamSpec:
    """A parameter declaration (workflow argument, template input or output)."""

    name: str
    value: str | None = None
    default: str | None = None
    enum: tuple[str, ...] = ()
    value_from_path: str | None = None
    value_from_default: str | None = None


@dataclass(frozen=True)
class ArtifactSpec:
    """An artifact declaration or a task's artifact argument; at most one source (from / raw / s3 key)."""

    name: str
    path: str | None = None
    from_: str | None = None
    raw_data: str | None = None
    s3_key: str | None = None
    optional: bool = False
    archive: bool = True  # tar.gz one object (Argo's default); False = `archive: {none: {}}`

    @property
    def has_source(self) -> bool:
        return self.from_ is not None or self.raw_data is not None or self.s3_key is not None


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    source: str | None = None  # script templates: the script, passed as the last argument
    skipped_env: tuple[str, ...] = ()  # env vars from secrets/config maps the process engine cannot resolve


@dataclass(frozen=True)
class SequenceSpec:
    count: str | None = None
    start: str | None = None
    end: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One DAG task, not yet substituted."""

    name: str
    template: str
    depends: DependsExpr | None
    when: str | None
    parameters: tuple[tuple[str, str], ...]
    artifacts: tuple[ArtifactSpec, ...]
    with_items: tuple[Any, ...] | None = None
    with_param: str | None = None
    with_sequence: SequenceSpec | None = None

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self.depends.tasks if self.depends else ()

    @property
    def fans_out(self) -> bool:
        return self.with_items is not None or self.with_param is not None or self.with_sequence is not None


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    kind: Literal["dag", "container", "script"]
    input_parameters: tuple[ParamSpec, ...] = ()
    input_artifacts: tuple[ArtifactSpec, ...] = ()
    output_parameters: tuple[ParamSpec, ...] = ()
    output_artifacts: tuple[ArtifactSpec, ...] = ()
    container: ContainerSpec | None = None
    tasks: tuple[TaskSpec, ...] = ()
    target: tuple[str, ...] = ()
    retry_limit: int = 0
    retry_policy: str = "OnFailure"
    retry_expression: str | None = None


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    kind: str
    entrypoint: str
    parameters: tuple[ParamSpec, ...]
    templates: Mapping[str, TemplateSpec]
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: str = "<string>"

    def template(self, name: str) -> TemplateSpec:
        return self.templates[name]


# --- loading ------------------------------------------------------------------------------------------------------


def load_workflow(path: Path) -> WorkflowSpec:
    """Read a rendered workflow YAML (one document of a supported kind) and validate it."""
    if not path.is_file():
        raise KoloraError(f"workflow template {path} not found: render it first (kolora render) or pass --template")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
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
    meta = _mapping(doc.get("metadata") or {}, f"{where}: metadata")
    name = str(meta.get("name") or str(meta.get("generateName") or "").rstrip("-") or "workflow")
    annotations = {str(k): str(v) for k, v in _mapping(meta.get("annotations") or {}, f"{where}: annotations").items()}
    spec = _mapping(doc.get("spec"), f"{where}: spec")
    _check_keys(spec, {"entrypoint", "arguments", "templates"}, _SPEC_IGNORED, f"{where}: spec")

    arguments = _mapping(spec.get("arguments") or {}, f"{where}: spec.arguments")
    _check_keys(arguments, {"parameters"}, set(), f"{where}: spec.arguments")
    parameters = tuple(
        _param(p, f"{where}: spec.arguments.parameters")
        for p in _list(arguments.get("parameters"), f"{where}: arguments.parameters")
    )
    _unique((p.name for p in parameters), f"{where}: spec.arguments.parameters")

    templates: dict[str, TemplateSpec] = {}
    for raw in _list(spec.get("templates"), f"{where}: spec.templates"):
        tmpl = _template(raw, where)
        if tmpl.name in templates:
            raise KoloraError(f"{where}: template '{tmpl.name}' is defined twice")
        templates[tmpl.name] = tmpl
    entrypoint = str(spec.get("entrypoint") or "")
    if entrypoint not in templates:
        raise KoloraError(f"{where}: spec.entrypoint '{entrypoint}' names no template (have: {', '.join(templates)})")
    workflow = WorkflowSpec(name, kind, entrypoint, parameters, templates, annotations, source)
    _validate_dags(workflow)
    return workflow


# --- pieces -------------------------------------------------------------------------------------------------------


def _template(raw: Any, source: str) -> TemplateSpec:
    raw = _mapping(raw, f"{source}: spec.templates[]")
    name = str(raw.get("name") or "")
    if not name:
        raise KoloraError(f"{source}: a template has no name")
    where = f"{source}: template '{name}'"
    _check_keys(raw, {"name", "container", "script", "dag", "inputs", "outputs", "retryStrategy"}, _TEMPLATE_IGNORED, where)
    bodies = [k for k in ("container", "script", "dag") if k in raw]
    if len(bodies) != 1:
        raise KoloraError(f"{where}: needs exactly one of container, script or dag (has {', '.join(bodies) or 'none'})")
    kind = bodies[0]

    inputs = _mapping(raw.get("inputs") or {}, f"{where}: inputs")
    _check_keys(inputs, {"parameters", "artifacts"}, set(), f"{where}: inputs")
    outputs = _mapping(raw.get("outputs") or {}, f"{where}: outputs")
    _check_keys(outputs, {"parameters", "artifacts"}, {"result", "exitCode"}, f"{where}: outputs")
    in_params = tuple(
        _param(p, f"{where}: inputs.parameters") for p in _list(inputs.get("parameters"), f"{where}: inputs.parameters")
    )
    in_arts = tuple(
        _artifact(a, f"{where}: inputs.artifacts", need_path=kind != "dag")
        for a in _list(inputs.get("artifacts"), f"{where}: inputs.artifacts")
    )
    out_params = tuple(
        _param(p, f"{where}: outputs.parameters", output=True)
        for p in _list(outputs.get("parameters"), f"{where}: outputs.parameters")
    )
    out_arts = tuple(
        _artifact(a, f"{where}: outputs.artifacts", need_path=True)
        for a in _list(outputs.get("artifacts"), f"{where}: outputs.artifacts")
    )
    for group, items in (("inputs.parameters", in_params), ("inputs.artifacts", in_arts)):
        _unique((i.name for i in items), f"{where}: {group}")
    for group, items in (("outputs.parameters", out_params), ("outputs.artifacts", out_arts)):
        _unique((i.name for i in items), f"{where}: {group}")
    for art in out_arts:
        if art.from_ is not None or art.raw_data is not None:
            raise KoloraError(f"{where}: output artifact '{art.name}' cannot have from/raw; {UNSUPPORTED_HINT}")

    retry_limit, retry_policy, retry_expression = _retry(raw.get("retryStrategy") or {}, f"{where}: retryStrategy")

    if kind == "dag":
        if out_params or out_arts:
            raise KoloraError(f"{where}: DAG template outputs are not supported; {UNSUPPORTED_HINT}")
        dag = _mapping(raw["dag"], f"{where}: dag")
        _check_keys(dag, {"tasks", "target"}, {"failFast"}, f"{where}: dag")
        tasks = tuple(_task(t, where) for t in _list(dag.get("tasks"), f"{where}: dag.tasks"))
        _unique((t.name for t in tasks), f"{where}: dag.tasks")
        target = tuple(str(dag.get("target") or "").split())
        return TemplateSpec(name, "dag", in_params, in_arts, tasks=tasks, target=target)
    return TemplateSpec(
        name,
        "container" if kind == "container" else "script",
        in_params,
        in_arts,
        out_params,
        out_arts,
        container=_container(raw[kind], f"{where}: {kind}", script=kind == "script"),
        retry_limit=retry_limit,
        retry_policy=retry_policy,
        retry_expression=retry_expression,
    )


def _retry(raw: Any, where: str) -> tuple[int, str, str | None]:
    """limit, policy and expression of a retryStrategy; backoff and affinity only shape timing and placement."""
    retry = _mapping(raw, where)
    _check_keys(retry, {"limit", "retryPolicy", "expression"}, {"backoff", "affinity"}, where)
    try:
        limit = int(str(retry.get("limit", 0)))
    except ValueError:
        raise KoloraError(f"{where}: limit '{retry.get('limit')}' is not an integer") from None
    policy = str(retry.get("retryPolicy") or "OnFailure")
    if policy not in RETRY_POLICIES:
        raise KoloraError(f"{where}: retryPolicy '{policy}' is not one of {', '.join(RETRY_POLICIES)}")
    expression = str(retry["expression"]) if retry.get("expression") else None
    if expression:
        try:  # check once, at load time, that the local evaluator understands it
            should_retry("Always", expression, 1, 0.0, where)
        except KoloraError as exc:
            raise KoloraError(f"{exc}; {UNSUPPORTED_HINT}") from None
    return limit, policy, expression


def _container(raw: Any, where: str, *, script: bool) -> ContainerSpec:
    raw = _mapping(raw, where)
    supported = {"image", "command", "args", "env"} | ({"source"} if script else set())
    _check_keys(raw, supported, _CONTAINER_IGNORED, where)
    command = tuple(_string(c) for c in _list(raw.get("command"), f"{where}: command"))
    if script and not command:
        command = ("python",)
    if not command:
        raise KoloraError(f"{where}: no command; the local runner cannot know the image's entrypoint, so state it")
    env: list[tuple[str, str]] = []
    skipped: list[str] = []
    for item in _list(raw.get("env"), f"{where}: env"):
        item = _mapping(item, f"{where}: env[]")
        if "valueFrom" in item:
            skipped.append(str(item.get("name")))
        else:
            env.append((str(item.get("name")), _string(item.get("value", ""))))
    return ContainerSpec(
        image=str(raw.get("image") or ""),
        command=command,
        args=tuple(_string(a) for a in _list(raw.get("args"), f"{where}: args")),
        env=tuple(env),
        source=_string(raw["source"]) if script and "source" in raw else None,
        skipped_env=tuple(skipped),
    )


def _task(raw: Any, template_where: str) -> TaskSpec:
    raw = _mapping(raw, f"{template_where}: dag.tasks[]")
    name = str(raw.get("name") or "")
    where = f"{template_where}: task '{name}'"
    if not name:
        raise KoloraError(f"{template_where}: a DAG task has no name")
    if "." in name or "/" in name:
        raise KoloraError(f"{where}: task names may not contain '.' or '/'")
    _check_keys(
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
        str(d) for d in _list(raw.get("dependencies"), f"{where}: dependencies")
    )
    depends = parse_depends(depends_text, where) if depends_text.strip() else None
    loops = [k for k in ("withItems", "withParam", "withSequence") if k in raw]
    if len(loops) > 1:
        raise KoloraError(f"{where}: use only one of withItems, withParam, withSequence")
    arguments = _mapping(raw.get("arguments") or {}, f"{where}: arguments")
    _check_keys(arguments, {"parameters", "artifacts"}, set(), f"{where}: arguments")
    params: list[tuple[str, str]] = []
    for p in _list(arguments.get("parameters"), f"{where}: arguments.parameters"):
        spec = _param(p, f"{where}: arguments.parameters")
        params.append((spec.name, spec.value if spec.value is not None else (spec.default or "")))
    arts = tuple(
        _artifact(a, f"{where}: arguments.artifacts", need_path=False)
        for a in _list(arguments.get("artifacts"), f"{where}: arguments.artifacts")
    )
    _unique((n for n, _ in params), f"{where}: arguments.parameters")
    _unique((a.name for a in arts), f"{where}: arguments.artifacts")
    sequence = None
    if "withSequence" in raw:
        seq = _mapping(raw["withSequence"], f"{where}: withSequence")
        _check_keys(seq, {"count", "start", "end", "format"}, set(), f"{where}: withSequence")
        sequence = SequenceSpec(
            **{k: None if seq.get(k) is None else _string(seq[k]) for k in ("count", "start", "end", "format")}
        )
    with_items = None
    if "withItems" in raw:
        with_items = tuple(_list(raw["withItems"], f"{where}: withItems"))
    return TaskSpec(
        name=name,
        template=str(raw["template"]),
        depends=depends,
        when=_string(raw["when"]) if raw.get("when") not in (None, "") else None,
        parameters=tuple(params),
        artifacts=arts,
        with_items=with_items,
        with_param=_string(raw["withParam"]) if "withParam" in raw else None,
        with_sequence=sequence,
    )


def _param(raw: Any, where: str, *, output: bool = False) -> ParamSpec:
    raw = _mapping(raw, f"{where}[]")
    name = str(raw.get("name") or "")
    if not name:
        raise KoloraError(f"{where}: a parameter has no name")
    where = f"{where} '{name}'"
    _check_keys(raw, {"name", "value", "default", "enum", "valueFrom"}, _PARAM_IGNORED, where)
    path = vf_default = None
    if "valueFrom" in raw:
        value_from = _mapping(raw["valueFrom"], f"{where}: valueFrom")
        if not output:
            raise KoloraError(f"{where}: valueFrom on an input parameter (config maps) is not supported; {UNSUPPORTED_HINT}")
        _check_keys(value_from, {"path", "default"}, set(), f"{where}: valueFrom")
        if "path" not in value_from:
            raise KoloraError(f"{where}: valueFrom needs a path")
        path = str(value_from["path"])
        vf_default = _string(value_from["default"]) if "default" in value_from else None
    elif output and "value" not in raw:
        raise KoloraError(f"{where}: an output parameter needs valueFrom.path or a value")
    return ParamSpec(
        name=name,
        value=_string(raw["value"]) if raw.get("value") is not None else None,
        default=_string(raw["default"]) if raw.get("default") is not None else None,
        enum=tuple(_string(e) for e in _list(raw.get("enum"), f"{where}: enum")),
        value_from_path=path,
        value_from_default=vf_default,
    )


def _artifact(raw: Any, where: str, *, need_path: bool) -> ArtifactSpec:
    raw = _mapping(raw, f"{where}[]")
    name = str(raw.get("name") or "")
    if not name:
        raise KoloraError(f"{where}: an artifact has no name")
    where = f"{where} '{name}'"
    _check_keys(raw, {"name", "path", "from", "raw", "s3", "optional", "archive"}, _ARTIFACT_IGNORED, where)
    if need_path and not raw.get("path"):
        raise KoloraError(f"{where}: no path")
    raw_data = None
    if "raw" in raw:
        raw_spec = _mapping(raw["raw"], f"{where}: raw")
        _check_keys(raw_spec, {"data"}, set(), f"{where}: raw")
        raw_data = _string(raw_spec.get("data", ""))
    s3_key = None
    if "s3" in raw:
        s3 = _mapping(raw["s3"], f"{where}: s3")
        _check_keys(s3, {"key"}, set(), f"{where}: s3 (only a key in the default artifact repository is supported)")
        if not s3.get("key"):
            raise KoloraError(f"{where}: s3 without a key (hera renders `s3: {{}}` for S3Artifact without key); give a key")
        s3_key = str(s3["key"])
    archive = True
    if "archive" in raw:
        strategy = _mapping(raw["archive"] or {}, f"{where}: archive")
        _check_keys(strategy, {"none", "tar"}, set(), f"{where}: archive")
        archive = "none" not in strategy
    sources = [k for k in ("from", "raw", "s3") if k in raw]
    if len(sources) > 1:
        raise KoloraError(f"{where}: more than one source ({', '.join(sources)})")
    return ArtifactSpec(
        name=name,
        path=str(raw["path"]) if raw.get("path") else None,
        from_=str(raw["from"]) if "from" in raw else None,
        raw_data=raw_data,
        s3_key=s3_key,
        optional=bool(raw.get("optional", False)),
        archive=archive,
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


# --- small helpers ------------------------------------------------------------------------------------------------


def _check_keys(raw: Mapping[str, Any], supported: set[str], ignored: set[str], where: str) -> None:
    unknown = sorted(set(raw) - supported - ignored)
    if unknown:
        raise KoloraError(f"{where}: field '{unknown[0]}' is not supported; {UNSUPPORTED_HINT}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise KoloraError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KoloraError(f"{where}: expected a list, got {type(value).__name__}: {str(value)[:60]}")
    return value


def _unique(names: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise KoloraError(f"{where}: '{name}' appears twice")
        seen.add(name)


def _string(value: Any) -> str:
    """Argo parameter values are strings; YAML may have typed them (true, 3, {a: 1})."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))
