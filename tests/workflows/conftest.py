"""Shared fixtures of the Argo workflow tests: the rendered objects, parsed once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.argo_schema` whether pytest runs as `pytest` or `python -m pytest`
    sys.path.insert(0, str(REPO_ROOT))

from workflows.render import render_all  # noqa: E402


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """File name -> YAML text, default options (what workflows/dist/ must hold)."""
    return render_all()


RBAC_FILE = "kolora-rbac.yaml"  # plain Kubernetes objects (several documents); every other file is one Argo object


@pytest.fixture(scope="session")
def objects(rendered: dict[str, str]) -> dict[str, dict]:
    """File name -> the Argo object of every file but the RBAC manifest."""
    return {name: yaml.safe_load(text) for name, text in rendered.items() if name != RBAC_FILE}


@pytest.fixture(scope="session")
def rbac(rendered: dict[str, str]) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered[RBAC_FILE]) if d]


@pytest.fixture(scope="session")
def template(objects: dict[str, dict]) -> dict:
    return objects["kolora-pipeline.yaml"]


@pytest.fixture(scope="session")
def cpu_rendered() -> dict[str, str]:
    """`kolora render --no-gpu` (kind, CPU CI): rendered on demand, not committed."""
    return render_all(gpu=False)


@pytest.fixture(scope="session")
def cpu_template(cpu_rendered: dict[str, str]) -> dict:
    return yaml.safe_load(cpu_rendered["kolora-pipeline.yaml"])
