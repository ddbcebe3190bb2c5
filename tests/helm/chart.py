"""Render helm/kolora offline and validate what comes out; shared by the chart tests.

The Helm library comes from the `helm-python-sdk` wheel (Helm v4's Go code, no binary, no cluster):

    from tests.helm.chart import render, validate_core, argo_errors
    docs = render({"gpu": {"enabled": False}})       # {"templates/x.yaml": [obj, ...]}, like `helm template -f`

Tests calling these are skipped (with the pip line to fix it) where helm-python-sdk or kubernetes-validate is
missing. Core objects are validated for KUBERNETES_VERSION (the kind smoke node's minor), Argo objects against
the CRD schemas of tests/argo_schema.py.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argo_schema import CRD_FILES, VERSIONS, require_crds, schema_errors

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "kolora"
RELEASE = NAMESPACE = "kolora"  # what helm/kind-smoke.sh installs
KUBERNETES_VERSION = "1.33.0"  # kindest/node v1.33.x in helm/kind-smoke.sh (a test keeps them together)
CI_DIR = CHART / "ci"
SMOKE_SCRIPT = REPO_ROOT / "helm" / "kind-smoke.sh"
SMOKE_DIR = REPO_ROOT / "helm" / "smoke"
PINS = "pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def helm_library() -> Any:
    return pytest.importorskip("helm_python", reason=f"the Helm library is not installed: {PINS}")


@functools.cache
def _chart() -> Any:
    return helm_library().Chart.load(str(CHART))


@functools.cache
def _render_text(values_json: str, name: str, namespace: str) -> dict[str, str]:
    rendered = _chart().render(values=json.loads(values_json), name=name, namespace=namespace)
    return {path.removeprefix(f"{CHART.name}/"): text for path, text in rendered.items()}


def render_text(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template -f values.yaml`."""
    return _render_text(json.dumps(values or {}, sort_keys=True), name, namespace)


@functools.cache
def _render(values_json: str, name: str, namespace: str) -> dict[str, list[dict]]:
    out = {}
    for path, text in _render_text(values_json, name, namespace).items():
        if path.endswith((".yaml", ".yml")):
            docs = [d for d in yaml.load_all(text, Loader=_Loader) if d]
            if docs:
                out[path] = docs
    return out


def render(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, list[dict]]:
    """Template path -> its non-empty YAML documents (cached: do not modify them); templates rendering nothing are left out."""
    return _render(json.dumps(values or {}, sort_keys=True), name, namespace)


def objects(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict]:
    return [d for docs in render(values, **kwargs).values() for d in docs]


def by_kind(values: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for obj in objects(values, **kwargs):
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


def ci_values() -> dict[str, dict[str, Any]]:
    """ci/<name>-values.yaml -> its values, by <name>."""
    return {
        p.name.removesuffix("-values.yaml"): yaml.safe_load(p.read_text()) or {} for p in sorted(CI_DIR.glob("*-values.yaml"))
    }


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge recursively, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def is_argo(obj: dict[str, Any]) -> bool:
    return obj.get("apiVersion", "").startswith("argoproj.io/") and obj.get("kind") in CRD_FILES


def validate_core(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate --strict for KUBERNETES_VERSION: [] or the error."""
    kv = pytest.importorskip("kubernetes_validate", reason=f"kubernetes-validate is not installed: {PINS}")
    try:
        kv.validate(obj, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as err:
        return [f"{obj['kind']}/{obj['metadata'].get('name')}: {err}"]
    return []


def argo_errors(obj: dict[str, Any]) -> list[str]:
    require_crds()
    return [f"{version}: {e}" for version in VERSIONS for e in schema_errors(obj, version)]


def validate(obj: dict[str, Any]) -> list[str]:
    """Argo objects against both CRD schemas, everything else with kubernetes-validate."""
    return argo_errors(obj) if is_argo(obj) else validate_core(obj)


def script_defaults() -> dict[str, str]:
    """`VAR="${VAR:-default}"` lines of helm/kind-smoke.sh."""
    text = SMOKE_SCRIPT.read_text()
    return dict(re.findall(r'^([A-Z_]+)="\$\{\1:-([^}$]*)\}"', text, flags=re.M))
