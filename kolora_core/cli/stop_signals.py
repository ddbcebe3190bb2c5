"""SIGTERM and SIGHUP to `kolora run`, raised in its main thread as `Stopped`, so the run stops as on Ctrl-C.

Why both: SIGTERM is Kubernetes' preemption, `argo stop`, a CI timeout; SIGHUP is the terminal closing or the ssh
connection dropping. Each step runs in a session of its own (Ctrl-C and hangups reach only the runner, which then
stops the step's whole process group), so a signal the runner does not handle kills the runner alone and leaves
the step running, orphaned: that was SIGHUP's fate before it was handled here.

After a hangup nothing reads the terminal any more: a write to it fails (EIO), and so does one to a `| tee` that
died with it (EPIPE). The runner's console ignores such failures (`RunContext.show`; the lines are in the step
logs), and `last_line` here keeps them from the exit code, so the run still stops the step, writes `summary.txt`
and exits 129 rather than dying of its own print.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
WHY = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP: the terminal closed)"}


class Stopped(BaseException):
    """A stop signal arrived: handled like Ctrl-C (a BaseException, so no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signal.Signals(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a death by that signal: 143 SIGTERM, 129 SIGHUP."""
        return 128 + self.signum

    @property
    def why(self) -> str:
        return WHY.get(self.signum, self.signum.name)


def _stop(signum: int, frame: FrameType | None) -> None:
    for number in STOP_SIGNALS:  # one stop is enough; a second signal must not cut the stop short
        signal.signal(number, signal.SIG_IGN)
    raise Stopped(signum)


def last_line(line: str) -> None:
    """The stopped run's last line on stderr, if anything still reads it. Where stdout or stderr is broken (the
    `| tee` of a closed terminal died with it), it is pointed at /dev/null, so that the interpreter's own flush at
    exit cannot turn the run's exit code into 120."""
    for stream, text in ((sys.stdout, ""), (sys.stderr, line + "\n")):
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While in the block, SIGTERM and SIGHUP raise `Stopped` in the main thread; elsewhere (a test's thread, where
    Python cannot handle signals) the block runs unchanged. The previous handlers are restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
