"""SIGTERM during training: finish the current step, write a checkpoint at it, exit 143, all within a grace period.

Kubernetes sends SIGTERM on preemption, eviction, node drain and `argo stop`, then SIGKILL after the pod's
`terminationGracePeriodSeconds` (30 s unless set). Dying at once would lose every step since the last periodic
checkpoint (up to `train.checkpoint_every`). So the handler only sets a flag: the loop checks it between steps,
saves the state at the step just completed through the ordinary checkpoint path, and raises `Terminated`
(exit 143 = 128 + SIGTERM, which the workflow retries; the retry resumes from that step). A timer bounds the
wait: when no step ends within `train.sigterm_grace_s` (the signal came during model loading or cache
building, or a step is slower than the grace), the process exits 143 at once with the last periodic
checkpoint, before the kubelet's SIGKILL could cut a write or the upload of the checkpoints that follows.

The default grace (20 s) leaves 10 s of Kubernetes' 30 s to Argo's wait container, which uploads the
`checkpoints` artifact after the main container exits. The handler lives in the process that runs the loop
(one device); with `train.devices > 1` the ranks are other processes and stop with the pod.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("kolora.train")
EXIT_CODE = 128 + signal.SIGTERM
_requested = threading.Event()


def requested() -> bool:
    """True once SIGTERM arrived: the loop should checkpoint after the current step and stop."""
    return _requested.is_set()


def _give_up(grace_s: float) -> None:
    print(
        f"kolora train: SIGTERM: no step ended within train.sigterm_grace_s ({grace_s:g} s); "
        "exiting without a new checkpoint (a rerun resumes from the last one)",
        file=sys.stderr,
        flush=True,
    )
    logging.shutdown()
    os._exit(EXIT_CODE)


@contextmanager
def checkpoint_on_sigterm(grace_s: float) -> Iterator[None]:
    """Turn SIGTERM into `requested()` while the block runs, with `grace_s` seconds until a hard exit."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    timers: list[threading.Timer] = []

    def handler(signum: int, frame: object) -> None:
        if _requested.is_set():
            return
        _requested.set()
        log.warning("SIGTERM: checkpointing after the current step, then exiting (at most %g s)", grace_s)
        timer = threading.Timer(grace_s, _give_up, args=(grace_s,))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        for timer in timers:
            timer.cancel()
        _requested.clear()
