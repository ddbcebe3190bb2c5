"""Stage logs: third-party noise at debug level, kolora's lines and every library's errors kept; progress lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kolora_core.progress import Progress, watch_growth

ROOT = Path(__file__).resolve().parents[2]
NOISE = ("somelib is deprecated", "No sdxl_text_encoder", "gemm_4bit_forward", "torch_dtype")


def _noisy_stage(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A real stage process (fresh interpreter, the shell's own logging) running tests/core/noisy_work.py."""
    code = "import sys; from kolora_core.stage_cli import stage_main; sys.exit(stage_main('ingest', sys.argv[1], sys.argv[2:]))"
    argv = ["tests.core.noisy_work:work", "--profile", "smoke", "--dataset", str(tmp_path / "out")]
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_third_party_noise_is_hidden_and_kolora_lines_and_errors_are_kept(tmp_path: Path) -> None:
    done = _noisy_stage(tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert [n for n in NOISE if n in out] == []
    assert "somelib: a real error" in done.stderr  # errors stay, whoever logs them
    assert "kolora's own warning" in done.stderr and "kolora's own line" in done.stderr
    assert done.stdout.strip() == "kolora's own print"


def test_debug_level_shows_the_noise_as_debug(tmp_path: Path) -> None:
    done = _noisy_stage(tmp_path, KOLORA_LOG_LEVEL="debug")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    routed = [line for line in lines if any(n in line for n in NOISE[:3])]  # warnings, prints, plain loggers
    assert len(routed) == 3 and all(" DEBUG " in line for line in routed), routed
    assert any(NOISE[3] in line for line in lines)  # transformers prints it itself, at its default level


def test_progress_lines_are_throttled_with_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress(logging.getLogger("kolora.test"), "caching latents (VAE)", 10, "images", every_s=30, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="kolora.test"):
        for _ in range(10):
            now[0] += 10.0
            progress.advance()
        progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "caching latents (VAE): 3/10 images (30%), 0.1 images/s, ETA 70 s",
        "caching latents (VAE): 6/10 images (60%), 0.1 images/s, ETA 40 s",
        "caching latents (VAE): 9/10 images (90%), 0.1 images/s, ETA 10 s",
        "caching latents (VAE): 10 images in 100.0 s (0.1 images/s)",
    ]


def test_a_growing_directory_is_reported_while_it_grows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()

    def download() -> None:
        for i in range(6):
            (tmp_path / f"part-{i}").write_bytes(b"x" * 250_000)
            time.sleep(0.1)
        stop.set()

    log = logging.getLogger("kolora.test")
    with caplog.at_level(logging.INFO, logger="kolora.test"), watch_growth(log, "downloading x", tmp_path, 0.05):
        threading.Thread(target=download).start()
        stop.wait(10)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("downloading x: ") and "so far" in line for line in lines), lines
    assert lines[-1].startswith("downloading x: 1.5 MB in ")
