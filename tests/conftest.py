"""Fixtures shared across test packages: tiny models and a tiny training set, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from kolora_core.config import load_config
from kolora_core.models.fetch import fetch_models
from kolora_core.stages import COMPLETE_MARKER


def mark_complete(path: Path) -> Path:
    """Commit `path` as the stage shell does: a `_SUCCESS` listing every file in it."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    (path / COMPLETE_MARKER).write_text(json.dumps({"stage": "test", "files": files}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    fetch_models(load_config("smoke").models, out)
    return mark_complete(out)


def write_trainset(root: Path, count: int = 4, caption: str = "二次元") -> Path:
    (root / "train").mkdir(parents=True)
    lines = ["file_name,text"]
    for i in range(count):
        image = Image.new("RGB", (96, 112), (40 * i % 256, 90, 200))
        ImageDraw.Draw(image).ellipse((8 + i, 10, 80, 96), fill=(250, 190 - 20 * i, 30))
        image.save(root / "train" / f"{i}.png")
        lines.append(f"{i}.png,{caption}")
    (root / "train" / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mark_complete(root)


@pytest.fixture(scope="session")
def tiny_trainset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trainset(tmp_path_factory.mktemp("trainset"))
