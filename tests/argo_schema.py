"""Validate Argo objects offline against the CRD schemas of real Argo releases, rejecting unknown fields.

The full CRDs (`manifests/base/crds/full/argoproj.io_workflows.yaml`, ...) of each version in VERSIONS are vendored
as `tests/argo-crds/<version>.tar.xz` (~160 KB for both; the YAML is 14 MB), with their source URL and the sha256 of
every file in `tests/argo-crds/SOURCES.json`; each file is checked against it when read. Vendored rather than
fetched at test time because CI reaches only package registries: a fetch would always skip there. Refresh (or add
a version to VERSIONS) with `make argo-crds`, i.e. `python -m tests.argo_schema --refresh` (downloads the files
from the Argo release tag) or `--refresh --from DIR` (DIR/<version>/argoproj.io_*.yaml).

Kubernetes prunes unknown fields silently, so a misspelt field (`retryStategy`) would just vanish on the cluster;
here every object schema that lists `properties` and says nothing about extra fields gets
`additionalProperties: false`, so the typo fails the test instead. Maps (`labels`, `resources.limits`) keep their
own `additionalProperties`, and `x-kubernetes-preserve-unknown-fields` stays open.

    from tests.argo_schema import require_crds, schema_errors
    require_crds()                                      # pytest.skip with the reason when the archives are absent
    assert schema_errors(obj, "v4.1.2") == []          # obj: a dict with apiVersion/kind

Reused by the workflow tests and the Helm chart tests.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

CRDS = Path(__file__).resolve().parent / "argo-crds"
SOURCES = CRDS / "SOURCES.json"
SOURCE_URL = "https://raw.githubusercontent.com/argoproj/argo-workflows/{version}/manifests/base/crds/full/{file}"
VERSIONS = ("v4.1.2", "v3.7.18")
CRD_FILES = {
    "Workflow": "argoproj.io_workflows.yaml",
    "WorkflowTemplate": "argoproj.io_workflowtemplates.yaml",
    "CronWorkflow": "argoproj.io_cronworkflows.yaml",
}
CACHE_FORMAT = 2  # bump when `strict` changes
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-3 MB each


def archive(version: str) -> Path:
    return CRDS / f"{version}.tar.xz"


def require_crds() -> None:
    """pytest.skip, saying how to get them, when a vendored CRD archive is missing."""
    import pytest

    missing = [archive(v).name for v in VERSIONS if not archive(v).is_file()]
    if missing:
        pytest.skip(f"Argo CRD schemas missing from tests/argo-crds ({', '.join(missing)}): run `make argo-crds`")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _sources() -> dict[str, dict[str, str]]:
    """version -> {file: sha256} as recorded when the archives were made."""
    return json.loads(SOURCES.read_text(encoding="utf-8"))["versions"]


def crd_bytes(version: str, kind: str) -> bytes:
    """The CRD file of `kind` in Argo `version`, checked against its recorded sha256."""
    name = CRD_FILES[kind]
    with tarfile.open(archive(version), "r:xz") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise FileNotFoundError(f"{archive(version)} holds no {name}: run `make argo-crds`")
        data = member.read()
    expected = _sources()[version][name]
    if _sha256(data) != expected:
        raise ValueError(f"{archive(version)}:{name} has sha256 {_sha256(data)}, SOURCES.json says {expected}")
    return data


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

    Parsing a CRD's YAML takes ~0.6 s; the strict schema is cached as JSON in the temp dir, keyed by the
    CRD file's sha256, so later test runs load it in milliseconds.
    """
    digest = _sources()[version][CRD_FILES[kind]][:16]
    cache = Path(tempfile.gettempdir()) / "kolora-argo-crd-cache" / f"{version}-{kind}-{CACHE_FORMAT}-{digest}.json"
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    crd = yaml.load(crd_bytes(version, kind), Loader=_Loader)
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
        return [f"kind {kind!r} is not a vendored Argo kind ({', '.join(CRD_FILES)})"]
    errors = sorted(validator(version, kind).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{kind} {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}" for e in errors]


# ---------------------------------------------------------------- make argo-crds


def _fetch(version: str, name: str, source: Path | None) -> bytes:
    if source is not None:
        return (source / version / name).read_bytes()
    url = SOURCE_URL.format(version=version, file=name)
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _write_archive(version: str, files: dict[str, bytes]) -> None:
    """A reproducible tar.xz: sorted members, fixed owner and mtime."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    archive(version).write_bytes(buffer.getvalue())


def refresh(source: Path | None = None) -> dict[str, dict[str, str]]:
    """Write tests/argo-crds/<version>.tar.xz for every version in VERSIONS and SOURCES.json."""
    CRDS.mkdir(exist_ok=True)
    versions = {}
    for version in VERSIONS:
        files = {name: _fetch(version, name, source) for name in sorted(CRD_FILES.values())}
        for name, data in files.items():
            if b"kind: CustomResourceDefinition" not in data[:2000]:
                raise ValueError(f"{version}/{name} is not a CRD")
        _write_archive(version, files)
        versions[version] = {name: _sha256(data) for name, data in files.items()}
        print(f"{archive(version)}: {', '.join(files)} ({archive(version).stat().st_size // 1024} KB)")
    for stale in set(CRDS.glob("*.tar.xz")) - {archive(v) for v in VERSIONS}:
        stale.unlink()
    sources = {
        "about": "Argo Workflows' full CRDs, vendored for the offline schema tests (tests/argo_schema.py); make argo-crds",
        "source": SOURCE_URL,
        "versions": versions,
    }
    SOURCES.write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.argo_schema", description="Refresh the vendored Argo CRDs.")
    parser.add_argument("--refresh", action="store_true", required=True, help="rewrite tests/argo-crds/ for VERSIONS")
    parser.add_argument("--from", dest="source", type=Path, help="read DIR/<version>/<file> instead of downloading")
    refresh(parser.parse_args(argv).source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
