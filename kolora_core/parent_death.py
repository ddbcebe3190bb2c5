"""A child that must not outlive the process that started it: Linux's parent-death signal (PR_SET_PDEATHSIG).

Why the kernel: a parent killed outright (SIGKILL, the OOM killer) runs no cleanup code, so only the kernel can
still tell its children. It signals the child when the *thread* that started it ends (so such children are started
from a thread that lives as long as they should), and again whenever the thread that the child passed to ends,
until the last thread of the parent is gone and getppid changes. The embedded store's server gets SIGKILL
(`storage/embedded.py`); the step guard gets a signal of its own and stops the step as a deleted pod is stopped
(`step_guard.py`). Where there is no prctl (not Linux) `AVAILABLE` is False and nothing is asked of the kernel.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    """libc's prctl, looked up once at import: never in a forked child, where loading a library is not safe."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    except (OSError, TypeError):  # no C library to open by None (Windows)
        return None


_PRCTL = _find_prctl()
AVAILABLE = _PRCTL is not None


def signal_at_parent_death(signum: int, parent: int) -> bool:
    """Ask for `signum` when the thread that started this process ends; answers whether `parent` is still this
    process's parent (False: it died before the request took effect, so no signal will come)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the thread that started it ends, however it ends (Linux)."""

    def apply() -> None:
        if not signal_at_parent_death(signal.SIGKILL, parent):
            os._exit(1)

    return apply
