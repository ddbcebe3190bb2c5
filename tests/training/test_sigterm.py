"""SIGTERM to a real `python -m jobs.train` mid-run: a checkpoint at the signal's step, exit 143, and a rerun that
continues from that step to the uninterrupted run's LoRA. The grace period ends a process that cannot stop in time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kolora_core.training.checkpoint import list_checkpoints
from kolora_core.training.state_file import load_state
from tests.training.helpers import lora_max_diff, losses, train

REPO = Path(__file__).resolve().parents[2]
STEPS = 16
# no periodic checkpoint: the only state on disk is the one the signal wrote
FLAGS = ["--train.steps", str(STEPS), "--train.checkpoint_every", "0", "--train.log_every", "1",
         "--train.batch_size", "2", "--train.random_flip", "true", "--train.sigterm_grace_s", "120"]  # fmt: skip


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tiny_models: Path, tiny_trainset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "lora"
    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 0
    return out


def test_sigterm_mid_run_checkpoints_at_the_step_and_a_rerun_gives_the_same_lora(
    uninterrupted: Path, tiny_models: Path, tiny_trainset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    argv = [sys.executable, "-m", "jobs.train", "--profile", "smoke", "--trainset", str(tiny_trainset),
            "--models", str(tiny_models), "--lora", str(out), "--train.num_workers", "0", *FLAGS]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=stage_env(), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until the loop is running, then signal it as the kubelet does
        lines.append(line)
        if re.search(r"step 2/\d+ loss", line):
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            break
    else:
        pytest.fail("the run ended before step 2:\n" + "".join(lines))
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, rest
    assert time.monotonic() - signalled < 60
    saved = list_checkpoints(out.parent / f"{out.name}.checkpoints")  # the resumable --checkpoints dir, <--lora>.checkpoints
    assert len(saved) == 1, "one checkpoint, written at the signal"
    step = load_state(saved[0])["step"]
    assert 2 <= step < STEPS
    last = rest.strip().splitlines()[-1]
    assert last.startswith("kolora train: error: SIGTERM: stopped after step ") and f"step {step}," in last
    assert not (out / "_SUCCESS").exists()

    assert train(tiny_models, tiny_trainset, out, *FLAGS) == 0
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == f"step {step}"
    assert lora_max_diff(out, uninterrupted) <= 1e-6
    assert losses(out) == pytest.approx(losses(uninterrupted), abs=1e-6)


def test_no_step_ending_within_the_grace_period_exits_143_at_once(tmp_path: Path) -> None:
    """The signal came while models were loading (here: a sleep): nothing to checkpoint, exit before the SIGKILL."""
    script = textwrap.dedent(
        """
        import os, signal, time
        from kolora_core.training.sigterm import checkpoint_on_sigterm
        with checkpoint_on_sigterm(0.5):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and time.monotonic() - started < 20
    assert "no step ended within train.sigterm_grace_s (0.5 s)" in done.stderr.strip().splitlines()[-1]


def test_sigterm_handler_is_restored_after_the_loop() -> None:
    from kolora_core.training.sigterm import checkpoint_on_sigterm, requested

    before = signal.getsignal(signal.SIGTERM)
    with checkpoint_on_sigterm(5):
        assert signal.getsignal(signal.SIGTERM) is not before and not requested()
    assert signal.getsignal(signal.SIGTERM) is before
