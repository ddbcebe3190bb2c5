"""The import layers of pyproject's [tool.importlinter] hold for the tree, and `lint-imports` fails when one is broken.

The violations are planted in a copy of the packages (the checkout is never touched): an upward import, a cycle,
a stage that imports the object store, the runner importing the CLI. Each must be named in the report.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kolora_core

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kolora_core", "jobs", "workflows")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "dist"))
    shutil.copy(REPO_ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _plant(root: Path, module: str, line: str) -> None:
    path = root / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_tree_keeps_every_contract() -> None:
    done = _lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_planted_violations_break_the_contracts(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    _plant(root, "kolora_core/config/schema.py", "from kolora_core.inference import story  # noqa")  # upward + a cycle
    _plant(root, "kolora_core/training/cache.py", "import boto3  # noqa")  # a stage that knows S3
    _plant(root, "kolora_core/evaluation/gate.py", "from kolora_core.storage import s3  # noqa")
    _plant(root, "kolora_core/runner/local.py", "from kolora_core.cli import publish  # noqa")  # the library importing the CLI
    _plant(root, "workflows/options.py", "import torch  # noqa")  # rendering would load torch
    done = _lint_imports(root)
    report = done.stdout
    assert done.returncode == 1, report + done.stderr
    assert "kolora_core.config is not allowed to import kolora_core.inference" in report
    assert "kolora_core.runner is not allowed to import kolora_core.cli" in report
    assert "kolora_core.training is not allowed to import boto3" in report
    assert "kolora_core.evaluation is not allowed to import kolora_core.storage" in report
    assert "workflows is not allowed to import torch" in report
    assert "No cycles are allowed in kolora_core" in report and ".config -> .inference" in report
    assert "Contracts: 0 kept, 4 broken." in report


def test_the_layers_name_every_part_of_the_library() -> None:
    """A new kolora_core module or package must be given a layer, or no contract would check it."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    parts = {f"kolora_core.{m.name}" for m in pkgutil.iter_modules(kolora_core.__path__)}
    assert parts <= named, f"not in any layer of [tool.importlinter]: {sorted(parts - named)}"
