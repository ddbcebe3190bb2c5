"""tar.gz packing and unpacking with Argo's rules, so artifacts look the same after the local runner as on a cluster.

Argo's executor archives an output path (file or directory) as one tar.gz whose single top-level entry is the
path's base name, and on input extracts the tarball into a temporary directory and renames its single
top-level entry to the input path (several entries: the temporary directory itself becomes the path).
It decides whether a downloaded object is a tarball by content (gzip header + a readable tar entry), not by name.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


def pack_targz(source: Path, archive: Path) -> None:
    """Write `source` (a file or a directory) into `archive` as tar.gz with `source.name` as its top-level entry."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    # compresslevel 6 is gzip's default and Argo's; 9 costs ~3x the CPU for a few percent on weights
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(source, arcname=source.name)


def is_targz(path: Path) -> bool:
    """True if `path` is a gzip-compressed tar with at least one entry (Argo's `isTarball`)."""
    try:
        with path.open("rb") as fh:
            if fh.read(2) != GZIP_MAGIC:
                return False
        with tarfile.open(path, "r:gz") as tar:
            return tar.next() is not None
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile):
        return False


def unpack_targz(archive: Path, dest: Path) -> None:
    """Extract `archive` so that its single top-level entry becomes `dest` (Argo's `untar`).

    Members that would land outside the extraction directory (absolute paths, `..`, device files) are
    refused by tarfile's `data` filter: artifacts come from other steps and are not trusted blindly.
    """
    tmp = dest.parent / f".{dest.name}.tmpdir"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        entries = list(tmp.iterdir())
        _remove(dest)
        if len(entries) == 1:
            entries[0].rename(dest)
            tmp.rmdir()
        else:
            tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
