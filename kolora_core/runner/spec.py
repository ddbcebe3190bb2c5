"""The typed form of a rendered workflow, as `template.py` parses it and the executor runs it (nothing substituted yet)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kolora_core.runner.expressions import DependsExpr


@dataclass(frozen=True)
class ParamSpec:
    """A parameter declaration (workflow argument, template input or output)."""

    name: str
    value: str | None = None
    default: str | None = None
    enum: tuple[str, ...] = ()
    value_from_path: str | None = None
    value_from_default: str | None = None
    global_name: str | None = None  # outputs: also `{{workflow.outputs.parameters.<global_name>}}` once set


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
class SecretRef:
    """`valueFrom.secretKeyRef` of an env var: resolved from the run's secrets map (`RunOptions.secrets`)."""

    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, SecretRef], ...] = ()
    source: str | None = None  # script templates: the script, passed as the last argument


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
    on_exit: str | None = None  # spec.onExit: the template run after the entrypoint, whatever its outcome

    def template(self, name: str) -> TemplateSpec:
        return self.templates[name]
