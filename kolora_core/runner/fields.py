"""The leaf fields of a workflow template: parameters, artifacts, containers, retry strategies, and checked access.

Split from `template.py` (which parses the workflow, its templates and DAGs) so each stays one screenful of
rules: every field is either supported, known to be scheduling-only and ignored, or refused naming where it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import RETRY_POLICIES, should_retry
from kolora_core.runner.spec import ArtifactSpec, ContainerSpec, ParamSpec, SecretRef

UNSUPPORTED_HINT = "the local runner (kolora run) does not support it; run this workflow on Argo"

_CONTAINER_IGNORED = {
    "name", "imagePullPolicy", "resources", "volumeMounts", "securityContext", "workingDir", "ports",
    "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "tty", "stdin", "stdinOnce", "volumeDevices", "envFrom",
}  # fmt: skip
_ARTIFACT_IGNORED = {"mode", "recurseMode", "globalName", "archiveLogs", "artifactGC", "deleted", "description"}
_PARAM_IGNORED = {"description"}


def retry_strategy(raw: Any, where: str) -> tuple[int, str, str | None]:
    """limit, policy and expression of a retryStrategy; backoff and affinity only shape timing and placement."""
    retry = mapping(raw, where)
    check_keys(retry, {"limit", "retryPolicy", "expression"}, {"backoff", "affinity"}, where)
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


def container(raw: Any, where: str, *, script: bool) -> ContainerSpec:
    raw = mapping(raw, where)
    supported = {"image", "command", "args", "env"} | ({"source"} if script else set())
    check_keys(raw, supported, _CONTAINER_IGNORED, where)
    command = tuple(string(c) for c in as_list(raw.get("command"), f"{where}: command"))
    if script and not command:
        command = ("python",)
    if not command:
        raise KoloraError(f"{where}: no command; the local runner cannot know the image's entrypoint, so state it")
    env: list[tuple[str, str]] = []
    secrets: list[tuple[str, SecretRef]] = []
    for item in as_list(raw.get("env"), f"{where}: env"):
        item = mapping(item, f"{where}: env[]")
        name = str(item.get("name") or "")
        if "valueFrom" in item:
            secrets.append((name, secret_ref(item["valueFrom"], f"{where}: env '{name}'")))
        else:
            env.append((name, string(item.get("value", ""))))
    return ContainerSpec(
        image=str(raw.get("image") or ""),
        command=command,
        args=tuple(string(a) for a in as_list(raw.get("args"), f"{where}: args")),
        env=tuple(env),
        secret_env=tuple(secrets),
        source=string(raw["source"]) if script and "source" in raw else None,
    )


def secret_ref(raw: Any, where: str) -> SecretRef:
    """Only `secretKeyRef` (what the rendered workflows use); config maps and field refs are refused."""
    value_from = mapping(raw, f"{where}: valueFrom")
    check_keys(value_from, {"secretKeyRef"}, set(), f"{where}: valueFrom")
    ref = mapping(value_from.get("secretKeyRef"), f"{where}: valueFrom.secretKeyRef")
    check_keys(ref, {"name", "key", "optional"}, set(), f"{where}: valueFrom.secretKeyRef")
    if not ref.get("name") or not ref.get("key"):
        raise KoloraError(f"{where}: secretKeyRef needs a name and a key")
    return SecretRef(name=str(ref["name"]), key=str(ref["key"]), optional=bool(ref.get("optional", False)))


def param(raw: Any, where: str, *, output: bool = False) -> ParamSpec:
    raw, name = named(raw, where, where, "a parameter")
    where = f"{where} '{name}'"
    check_keys(raw, {"name", "value", "default", "enum", "valueFrom", "globalName"}, _PARAM_IGNORED, where)
    if "globalName" in raw and not output:
        raise KoloraError(f"{where}: globalName on an input parameter is not supported; {UNSUPPORTED_HINT}")
    path = vf_default = None
    if "valueFrom" in raw:
        value_from = mapping(raw["valueFrom"], f"{where}: valueFrom")
        if not output:
            raise KoloraError(f"{where}: valueFrom on an input parameter (config maps) is not supported; {UNSUPPORTED_HINT}")
        check_keys(value_from, {"path", "default"}, set(), f"{where}: valueFrom")
        if "path" not in value_from:
            raise KoloraError(f"{where}: valueFrom needs a path")
        path = str(value_from["path"])
        vf_default = string(value_from["default"]) if "default" in value_from else None
    elif output and "value" not in raw:
        raise KoloraError(f"{where}: an output parameter needs valueFrom.path or a value")
    return ParamSpec(
        name=name,
        value=string(raw["value"]) if raw.get("value") is not None else None,
        default=string(raw["default"]) if raw.get("default") is not None else None,
        enum=tuple(string(e) for e in as_list(raw.get("enum"), f"{where}: enum")),
        value_from_path=path,
        value_from_default=vf_default,
        global_name=str(raw["globalName"]) if raw.get("globalName") else None,
    )


def artifact(raw: Any, where: str, *, need_path: bool) -> ArtifactSpec:
    raw, name = named(raw, where, where, "an artifact")
    where = f"{where} '{name}'"
    check_keys(raw, {"name", "path", "from", "raw", "s3", "optional", "archive"}, _ARTIFACT_IGNORED, where)
    if need_path and not raw.get("path"):
        raise KoloraError(f"{where}: no path")
    raw_data = None
    if "raw" in raw:
        raw_spec = mapping(raw["raw"], f"{where}: raw")
        check_keys(raw_spec, {"data"}, set(), f"{where}: raw")
        raw_data = string(raw_spec.get("data", ""))
    s3_key = None
    if "s3" in raw:
        s3 = mapping(raw["s3"], f"{where}: s3")
        check_keys(s3, {"key"}, set(), f"{where}: s3 (only a key in the default artifact repository is supported)")
        if not s3.get("key"):
            raise KoloraError(f"{where}: s3 without a key (hera renders `s3: {{}}` for S3Artifact without key); give a key")
        s3_key = str(s3["key"])
    archive = True
    if "archive" in raw:
        strategy = mapping(raw["archive"] or {}, f"{where}: archive")
        check_keys(strategy, {"none", "tar"}, set(), f"{where}: archive")
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


def check_keys(raw: Mapping[str, Any], supported: set[str], ignored: set[str], where: str) -> None:
    unknown = sorted(set(raw) - supported - ignored)
    if unknown:
        raise KoloraError(f"{where}: field '{unknown[0]}' is not supported; {UNSUPPORTED_HINT}")


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise KoloraError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def named(value: Any, entries: str, where: str, what: str) -> tuple[Mapping[str, Any], str]:
    """An entry of the list at `entries` that must be a mapping with a name (parameter, artifact, template, task);
    a missing name is reported at `where` as `what` ("a parameter")."""
    raw = mapping(value, f"{entries}[]")
    name = str(raw.get("name") or "")
    if not name:
        raise KoloraError(f"{where}: {what} has no name")
    return raw, name


def as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KoloraError(f"{where}: expected a list, got {type(value).__name__}: {str(value)[:60]}")
    return value


def unique(names: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise KoloraError(f"{where}: '{name}' appears twice")
        seen.add(name)


def string(value: Any) -> str:
    """Argo parameter values are strings; YAML may have typed them (true, 3, {a: 1})."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))
