"""Progress of a long phase as plain log lines: done/total, rate and ETA, at most one line per interval.

Plain lines, not tqdm bars: Argo and `kubectl logs` show carriage-return bars as one endless line (the stage
shell turns third-party bars off, `kolora_core/logs.py`). A phase logs at most every `every_s` seconds while it
runs and once when it ends, so a smoke run shows one line per phase and a multi-hour phase one line a minute.
`Progress` counts items it is told about; `watch_growth` watches a directory fill (a download whose client
reports to nobody but its own bar).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EVERY_S = 30.0


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


class Progress:
    """`what: 120/4000 images (3%), 8.1 images/s, ETA 8 min` every `every_s` seconds; `finish` logs the total."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        total: int,
        unit: str,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.total, self.unit, self.every_s, self.clock = log, what, total, unit, every_s, clock
        self.done = 0
        self.started = self.last = clock()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            self.log.info(
                "%s: %d/%d %s (%d%%), %.1f %s/s, ETA %s",
                self.what,
                self.done,
                self.total,
                self.unit,
                100 * self.done // max(self.total, 1),
                rate,
                self.unit,
                duration((self.total - self.done) / max(rate, 1e-9)),
            )

    def finish(self) -> float:
        """Seconds the phase took (logged with the rate)."""
        seconds = self.clock() - self.started
        rate = self.done / max(seconds, 1e-9)
        self.log.info("%s: %d %s in %.1f s (%.1f %s/s)", self.what, self.done, self.unit, seconds, rate, self.unit)
        return seconds


def _tree_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:  # a client renamed or removed its temp file meanwhile
            continue
    return total


@contextmanager
def watch_growth(log: logging.Logger, what: str, root: Path, every_s: float = EVERY_S) -> Iterator[None]:
    """Log how much `root` grew (`what: 3.2 GB so far, 85.0 MB/s`) every `every_s` s from a thread, and the total."""
    stop = threading.Event()
    before, started = _tree_bytes(root), time.monotonic()

    def grown() -> tuple[int, float]:
        return _tree_bytes(root) - before, max(time.monotonic() - started, 1e-9)

    def watch() -> None:
        while not stop.wait(every_s):
            nbytes, seconds = grown()
            log.info("%s: %s so far, %s/s", what, size(nbytes), size(nbytes / seconds))

    thread = threading.Thread(target=watch, name="kolora-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    nbytes, seconds = grown()
    log.info("%s: %s in %.1f s", what, size(nbytes), seconds)
