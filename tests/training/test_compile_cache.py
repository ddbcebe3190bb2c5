"""The compile cache: keyed by torch/CUDA/triton/GPU; another key's artifacts are never loaded, one log line says so."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from kolora_core.models import unet_compile


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(name, os.environ.get(name, ""))


def test_same_key_reuses_its_directory_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = unet_compile.use_compile_cache(str(tmp_path))
    with caplog.at_level(logging.INFO, logger="kolora.compile"):
        again = unet_compile.use_compile_cache(str(tmp_path))
    assert first == again and not caplog.records
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(first / "inductor")
    assert json.loads((first / "kolora-compile-key.json").read_text()) == unet_compile.compile_key()


def test_a_cache_of_another_torch_or_gpu_is_ignored_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unet_compile, "compile_key", lambda: {"torch": "2.0.0", "gpu": "NVIDIA A100"})
    stale = unet_compile.use_compile_cache(str(tmp_path))
    (stale / "inductor").mkdir()
    (stale / "inductor" / "kernel.py").write_text("# compiled for the A100\n")
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="kolora.compile"):
        fresh = unet_compile.use_compile_cache(str(tmp_path))
    assert fresh != stale and not (fresh / "inductor" / "kernel.py").exists()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(fresh))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "A100" in lines[0] and "ignored" in lines[0]


def test_the_environment_names_the_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(unet_compile.CACHE_ENV, str(tmp_path / "from-env"))
    assert unet_compile.use_compile_cache(None).parent == tmp_path / "from-env"
