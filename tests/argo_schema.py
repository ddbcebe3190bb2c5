"""Validate Argo objects offline against the CRD schemas of real Argo releases, rejecting unknown fields.

The full CRDs (`argoproj.io_workflows.yaml`, ...) of each version live in `<crd dir>/<version>/`; the dir
is `$KOLORA_ARGO_CRDS`, else `../shared/argo-crds` beside the repository. Kubernetes prunes unknown
fields silently, so a misspelt field (`retryStategy`) would just vanish on the cluster; here every
object schema that lists `properties` and says nothing about extra fields gets
`additionalProperties: false`, so the typo fails the test instead. Maps (`labels`, `resources.limits`)
keep their own `additionalProperties`, and `x-kubernetes-preserve-unknown-fields` stays open.

    from tests.argo_schema import require_crd_dir, schema_errors
    require_crd_dir()                                   # pytest.skip with the reason when absent
    assert schema_errors(obj, "v4.1.2") == []          # obj: a dict with apiVersion/kind

Reused by the workflow tests and the Helm chart tests.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("v4.1.2", "v3.7.18")
CRD_FILES = {
    "Workflow": "argoproj.io_workflows.yaml",
    "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml",
    "CronWorkflow": "argoproj.io_cronworkflows.yaml",
    "ClusterWorkflowTemplate": "argoproj.io_clusterworkflowtemplates.yaml",
    "WorkflowEventBinding": "argoproj.io_workfloweventbindings.yaml",
}
CACHE_FORMAT = 1  # bump when `strict` changes
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-3 MB each


def crd_dir() -> Path | None:
    """Where the CRDs are, or None."""
    env = os.environ.get("KOLORA_ARGO_CRDS")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "argo-crds"
    return shared if shared.is_dir() else None


def require_crd_dir() -> Path:
    """The CRD dir, or pytest.skip saying how to provide it."""
    import pytest

    found = crd_dir()
    if found is None or not all((found / v).is_dir() for v in VERSIONS):
        pytest.skip(
            f"Argo CRD schemas not found ({found or 'no $KOLORA_ARGO_CRDS, no ../shared/argo-crds'}): "
            f"set KOLORA_ARGO_CRDS to a dir holding {', '.join(VERSIONS)}/argoproj.io_*.yaml"
        )
    return found


def strict(schema: Any) -> Any:
    """A copy of `schema` where every object schema with `properties` rejects unknown fields."""
    schema = copy.deepcopy(schema)
    _close(schema)
    return schema


def _close(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    for key in ("properties", "patternProperties", "definitions"):
        for child in (node.get(key) or {}).values():
            _close(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict | list):
            _close(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key) or []:
            _close(child)


@functools.cache
def crd_schema(version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of `kind` in Argo `version`.

    Parsing a CRD's YAML takes ~0.6 s; the strict schema is cached as JSON in the temp dir, keyed by
    the CRD file's path, size and mtime, so later test runs load it in milliseconds.
    """
    base = crd_dir()
    if base is None:
        raise FileNotFoundError("no Argo CRD dir: set KOLORA_ARGO_CRDS")
    path = (base / version / CRD_FILES[kind]).resolve()
    stat = path.stat()
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "kolora-argo-crd-cache" / f"{version}-{kind}-{digest}.json"
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    with path.open(encoding="utf-8") as fh:
        crd = yaml.load(fh, Loader=_Loader)
    (stored,) = [v for v in crd["spec"]["versions"] if v.get("storage", True)]
    schema = stored["schema"]["openAPIV3Schema"]
    _close(schema)  # freshly loaded: no copy needed
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(schema), encoding="utf-8")
        partial.replace(cache)
    except OSError:
        pass  # a read-only temp dir only costs speed
    return schema


@functools.cache
def validator(version: str, kind: str) -> Draft7Validator:
    return Draft7Validator(crd_schema(version, kind))


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    """`path: message` for each violation of the CRD schema (unknown fields included); [] when valid."""
    kind = obj.get("kind")
    if kind not in CRD_FILES:
        return [f"kind {kind!r} is not an Argo kind ({', '.join(CRD_FILES)})"]
    errors = sorted(validator(version, kind).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{kind} {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}" for e in errors]
