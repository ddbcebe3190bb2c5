"""Paths confined to a root: what a source folder yields is resolved, and nothing outside the root is ever opened.

A dataset is untrusted input. A folder copied from a tarball or a git repository can hold a symlink to
`/etc/passwd`, to a user's files, or to itself; followed, it turns a host file into training data (and its
first bytes into the ingest report). So every path is resolved (`os.path.realpath(strict=True)`) and
accepted only when its real path lies inside the real root; a symlink that points inside the root is fine
(it names a file of the dataset), one that points outside, dangles or loops is refused with an `Escape`
saying why, and is never opened. Only real directories are walked (a symlinked directory is never entered:
inside the root its files are reached by their real names, outside it is refused), and files are opened
with O_NOFOLLOW on their resolved path, so a link swapped in after the check is refused, not followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class Escape(Exception):
    """A path that is not a readable file inside the root; `kind` is a stable code, `reason` says it to a person."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _link_text(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def resolve_inside(root: Path, path: Path) -> Path:
    """The real path of `path` when it exists inside `root` (already resolved); else raise Escape (nothing is opened)."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Escape("symlink_loop", "a symlink loop; not followed") from None
        if path.is_symlink():
            raise Escape("missing_file", f"a symlink to {_link_text(path)}, which does not exist") from None
        raise Escape("missing_file", "no such file") from None
    if real != root and root not in real.parents:
        what = f"a symlink to {_link_text(path)}" if path.is_symlink() else "a path"
        raise Escape("outside_source", f"{what} outside the source root; not followed: copy the file into the source")
    return real


def open_inside(root: Path, path: Path) -> BinaryIO:
    """A regular file inside `root`, opened for reading; Escape when it is outside, not a regular file or unreadable."""
    real = resolve_inside(root, path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink after the check
            raise Escape("outside_source", "the file was replaced by a symlink while reading; not followed") from None
        raise Escape("unreadable", f"cannot read the file: {exc.strerror or exc}") from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise Escape("unreadable", "not a regular file (a device, FIFO or socket)")
    return handle


def read_inside(root: Path, path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file inside `root`; Escape when it is outside, not a file, or over `max_bytes`."""
    with open_inside(root, path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise Escape("too_large", f"{size / 2**20:.0f} MiB file is over the {max_bytes / 2**20:.0f} MiB limit")
        try:
            return handle.read(max_bytes + 1)[:max_bytes]
        except OSError as exc:
            raise Escape("unreadable", f"cannot read the file: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Entry:
    """One file under the root: `rel` as listed (posix, relative to the root), its real path, or why it is refused."""

    rel: str
    real: Path | None
    escape: Escape | None = None


def walk_inside(root: Path) -> Iterator[Entry]:
    """Every non-directory entry under `root` (already resolved); symlinks resolved and confined, none followed.

    Only real directories are walked, so there is no cycle to end: a symlinked directory that resolves
    inside the root is passed over (its files are listed under their real names), one that points outside,
    dangles or loops is yielded as a refused Entry and never listed.
    """
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            yield Entry(prefix.rstrip("/") or ".", None, Escape("unreadable", f"cannot list the directory: {exc.strerror}"))
            continue
        for entry in entries:
            rel = prefix + entry.name
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append((path, rel + "/"))
            elif not entry.is_symlink():
                yield Entry(rel, path)
            else:
                try:
                    real = resolve_inside(root, path)
                except Escape as escape:
                    yield Entry(rel, None, escape)
                    continue
                if not real.is_dir():
                    yield Entry(rel, real)
