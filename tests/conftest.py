"""Fixtures shared across test packages: tiny models, a tiny training set and one real S3 server, once per session."""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageDraw

from kolora_core.config import load_config
from kolora_core.inference.story import Generation, image_name, save_generation
from kolora_core.lora.format import LORA_FILE
from kolora_core.models.fetch import fetch_models
from kolora_core.stages import COMPLETE_MARKER

if TYPE_CHECKING:  # imported by the store fixtures only: the stage tests run where boto3 is absent (a GPU machine)
    from kolora_core.storage.embedded import EmbeddedS3
    from kolora_core.storage.s3 import S3Settings, S3Store

# A test session started in the background of a non-interactive shell (`make test &`, a CI runner's `nohup ... &`)
# inherits SIGINT ignored, and so would every `kolora run` a test starts: Python then installs no KeyboardInterrupt
# handler and the tests that stop a run with Ctrl-C (SIGINT) would see it run on. A Python handler here is reset to
# the default in each child at exec (an ignored signal would stay ignored), so those children get Ctrl-C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def mark_complete(path: Path) -> Path:
    """Commit `path` as the stage shell does: a `_SUCCESS` listing every file in it."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    (path / COMPLETE_MARKER).write_text(json.dumps({"stage": "test", "files": files}), encoding="utf-8")
    return path


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255), (128, 128, 128)]


def write_story_images(root: Path, shards: int = 1, lora: Path | None = None) -> Path:
    """Eight generated images (prompts p0..p7, one colour each) as generate writes them, in `shards` shard dirs,
    rendered with the LoRA directory `lora` (its lora.safetensors' sha256 in the records; default a made-up one)."""
    for index, colour in enumerate(COLOURS):
        shard_dir = root / f"shard-{index % shards}"
        shard_dir.mkdir(parents=True, exist_ok=True)
        record = Generation(
            index=index,
            file=image_name(index),
            prompt=f"p{index}",
            negative_prompt="",
            seed=index,
            cfg_scale=4,
            steps=4,
            width=64,
            height=64,
            lora_strength=1,
            lora_scale=0.25,
            lora_sha256=hashlib.sha256((lora / LORA_FILE).read_bytes()).hexdigest() if lora else "a" * 64,
            base_model_sha256="b" * 64,
            seconds=0.1,
        )
        image = Image.new("RGB", (64, 64), colour)
        ImageDraw.Draw(image).rectangle((0, 0, 63, 7), fill=(0, 0, 0))  # a picture, not a flat colour
        save_generation(image, shard_dir, record)
    for shard_dir in root.iterdir():
        mark_complete(shard_dir)
    return root


def no_champion(path: Path) -> Path:
    """A champion directory as `kolora champion` writes it before a model's first release."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "champion.json").write_text(json.dumps({"status": "none", "reason": "no release yet"}), encoding="utf-8")
    return mark_complete(path)


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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """One SeaweedFS server for the session, started by the embedded store's own code (the real S3 protocol)."""
    from kolora_core.storage.embedded import EmbeddedS3

    # one bucket per test: 32 MB volumes, so the session's ~45 buckets fit in ~1.5 GB of free disk, not ~45 GB
    server = EmbeddedS3(tmp_path_factory.mktemp("seaweedfs"), bucket="kolora-test", volume_size_mb=32)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(seaweedfs: EmbeddedS3) -> S3Settings:
    """The session server's settings, treated as an *external* endpoint (so objects stay there to be inspected)."""
    assert seaweedfs.settings is not None
    return replace(seaweedfs.settings, embedded=False)


@pytest.fixture
def store(s3_server: S3Settings) -> S3Store:
    """A fresh bucket per test, so listings only show this test's objects."""
    from kolora_core.storage.s3 import S3Store

    s = S3Store(replace(s3_server, bucket=f"t-{secrets.token_hex(4)}"))
    s.ensure_bucket()
    return s
