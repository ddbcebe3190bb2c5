"""`make help` lists every target of the Makefile (README: "make help  # every target")."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _phony_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    assert match, "the Makefile declares its targets in one .PHONY line"
    return set(match.group(1).split())


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_help_lists_every_target() -> None:
    # help has no prerequisites: it runs without the venv
    out = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    listed = {line.split("\t", 1)[0] for line in out.splitlines()}
    assert "k8s-tools" in _phony_targets()  # a target with a digit in its name
    assert listed == _phony_targets()
