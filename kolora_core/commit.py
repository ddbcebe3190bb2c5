"""Committed directories: an output path holds only what succeeded, and an input is read only as far as it was committed.

Why this shape: on a cluster, Argo's wait container uploads a step's output paths even after the main
container failed, and S3 uploads only ever add keys (argo-workflows v4.1.2, `workflow/executor`). So
whatever sits under an output path when a pod dies ends up in the bucket beside the retry's files, and the
next step downloads the union. Hence three rules, shared by every stage (`kolora_core.stage_cli`) and by
the steps that are not stages but hand on a directory the same way (the champion step):

* staging lives OUTSIDE every artifact path: `<parent>/.staging/<name>/` beside the output `<parent>/<name>`
  (`/kolora/outputs/.staging/lora` for `/kolora/outputs/lora`: same filesystem, so the commit is a rename).
  An output that is a mount of its own (the models PVC that kolora-fetch-models fills) is no artifact, and a
  rename is worth 18 GB of copying: it stages inside itself, `<out>/.staging/`. The output directory exists
  from the start, empty (or holding the previous commit, untouched), so a failed attempt uploads nothing, or
  exactly the previous committed state;
* a commit marks the directory `.committing`, replaces its contents by the staged files and writes
  `_SUCCESS` LAST, its `files` list naming every committed file, then drops the mark: a commit cut short is
  recognised as kolora's own and cleared by the next attempt;
* an input is accepted only with its `_SUCCESS` (one per shard for a fanned-out stage: `shard-N/`), and files
  its marker does not list are removed before the work runs (one log line names them): junk a failed attempt
  uploaded beside a committed output is never read. Listed files that are missing (a cut-off upload) refuse it.

Nothing read from a bucket is trusted: the marker is parsed as JSON data, its names must stay inside the
directory, and symbolic links are never followed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError, name_some
from kolora_core.relative_names import is_relative_name
from kolora_core.stages import COMPLETE_MARKER

STAGING = ".staging"
COMMITTING = ".committing"  # in an output from the first change of a commit until its _SUCCESS
log = logging.getLogger("kolora")


def staging_dir(out: Path) -> Path:
    """Where `out`'s files are written before the commit: beside it, or inside it when it is a mount of its own."""
    if out.is_dir() and os.path.ismount(out):
        return out / STAGING
    return out.parent / STAGING / out.name


def begin(out: Path, stage: str) -> Path:
    """Prepare output `out` of `stage` for a new attempt; returns its fresh, empty staging directory.

    `out` is created if missing. An earlier commit of the same stage stays as it is until `commit` replaces
    it, and so does a commit that was cut short (it is cleared). A directory holding other files but no commit,
    or another stage's commit (a models directory passed as ingest's --dataset), is refused rather than
    emptied: it is not this stage's to delete.
    """
    if out.exists() and not out.is_dir():
        raise KoloraError(f"output {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out)
    owner = committed_by(out)
    if owner is not None and owner != stage:
        raise KoloraError(
            f"output {out} holds what stage {owner} committed, and {stage} would replace it: pass another directory "
            "(or delete that one first if it is no longer needed)"
        )
    if (out / COMMITTING).exists():
        log.warning("output %s: clearing a commit that was cut short", out)
        _clear(out, keep=staging)
        (out / COMMITTING).unlink()
    elif not (out / COMPLETE_MARKER).is_file() and any(p != staging for p in out.iterdir()):
        raise KoloraError(
            f"output {out} holds files but no {COMPLETE_MARKER} (not a kolora output): empty it or pass another directory"
        )
    _remove(staging)
    staging.mkdir(parents=True)
    return staging


def committed_by(out: Path) -> str | None:
    """The stage named in `out`'s commit marker; None without a marker or a readable stage name in it."""
    try:
        record = json.loads((out / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    stage = record.get("stage") if isinstance(record, dict) else None
    return stage if isinstance(stage, str) else None


def commit(out: Path, staging: Path, marker: Mapping[str, Any]) -> list[str]:
    """Replace `out`'s contents by the staged files, then write `_SUCCESS` (with `marker` and the file list) last."""
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file() or p.is_symlink())
    if COMPLETE_MARKER in files:
        raise KoloraError(f"{staging} holds a file named {COMPLETE_MARKER}: that name is the commit marker")
    (out / COMMITTING).touch()
    (out / COMPLETE_MARKER).unlink(missing_ok=True)  # the earlier commit is void from here on
    _clear(out, keep=staging)  # empty, or the earlier commit (`begin` refused anything else)
    for entry in staging.iterdir():
        _move(entry, out / entry.name)
    staging.rmdir()
    if staging.parent != out:
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # `.staging` itself, once no other output of the step uses it
    record = {**marker, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    tmp = out / f"{COMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / COMPLETE_MARKER)
    (out / COMMITTING).unlink()
    return files


def accept_input(name: str, path: Path) -> list[str]:
    """Refuse a missing or uncommitted input; remove what its marker(s) do not list. Returns the removed names."""
    if not path.exists():
        raise KoloraError(f"input --{name} {path} does not exist: pass the output directory of the stage that makes {name}")
    if not path.is_dir():
        raise KoloraError(f"input --{name} {path} is not a directory")
    if (path / COMPLETE_MARKER).is_file():
        removed = _prune(name, path, path)
    else:
        shards = sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
        if not shards or not all((p / COMPLETE_MARKER).is_file() for p in shards):
            raise KoloraError(
                f"input --{name} {path} has no {COMPLETE_MARKER} marker: the stage that wrote it did not finish; rerun it"
            )
        # a fanned-out stage: one committed output per shard (images/shard-0, shard-1, ...); loose files are junk
        removed = [p.name for p in sorted(path.iterdir()) if p not in shards]
        for stray in removed:
            _remove_input(name, path / stray)
        for shard in shards:
            removed += _prune(name, shard, path)
    if removed:
        shown = name_some(removed, 5)
        why = f"its {COMPLETE_MARKER} does not list (a failed attempt's uploads, or files added after the commit)"
        log.warning("input --%s: removed %d file(s) %s: %s", name, len(removed), why, shown)
    return removed


def _listed_files(name: str, directory: Path) -> set[str]:
    marker = directory / COMPLETE_MARKER
    if marker.is_symlink():  # to another commit's marker, or to a pipe that a read would wait on for ever
        raise KoloraError(f"input --{name}: {marker} is a symbolic link; committed outputs hold plain files")
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise KoloraError(f"input --{name}: {marker} is not a JSON commit marker: rerun the stage that makes {name}") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise KoloraError(
            f"input --{name}: {marker} lists no files (not written by a kolora commit): rerun the stage that makes {name}"
        )
    for entry in files:
        if not is_relative_name(entry) or entry == COMPLETE_MARKER:
            raise KoloraError(f"input --{name}: {marker} names '{entry}', which is not a file inside {directory}")
    return set(files)


def _prune(name: str, directory: Path, root: Path) -> list[str]:
    """Remove every entry of `directory` that its marker does not list; names are returned relative to `root`."""
    listed = _listed_files(name, directory)
    present: set[str] = set()
    removed: list[str] = []
    for parent, dirs, files in os.walk(directory):
        here = Path(parent)
        for entry in sorted([*files, *(d for d in dirs if (here / d).is_symlink())]):
            path = here / entry
            rel = path.relative_to(directory).as_posix()
            if rel == COMPLETE_MARKER:
                continue
            if rel in listed and (path.is_symlink() or not path.is_file()):
                what = "a symbolic link" if path.is_symlink() else "not a regular file (a pipe, socket or device)"
                raise KoloraError(f"input --{name}: {path} is {what}; committed outputs hold plain files")
            if rel in listed:
                present.add(rel)
            else:
                _remove_input(name, path)
                removed.append(path.relative_to(root).as_posix())
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    missing = sorted(listed - present)
    if missing:
        raise KoloraError(
            f"input --{name} {directory} is incomplete: its {COMPLETE_MARKER} lists {len(missing)} missing file(s) "
            f"(e.g. {missing[0]}): the upload was cut short; rerun the stage that makes {name}"
        )
    for parent, _, _ in os.walk(directory, topdown=False):  # children first
        if Path(parent) != directory and not any(Path(parent).iterdir()):
            Path(parent).rmdir()  # directories that held only junk
    return sorted(removed)


def _remove_input(name: str, path: Path) -> None:
    try:
        _remove(path)
    except OSError as exc:
        raise KoloraError(
            f"input --{name}: {path} is not part of its committed output and cannot be removed ({exc.strerror}): remove it"
        ) from None


def _clear(directory: Path, keep: Path) -> None:
    """Empty `directory`, except `keep` (its staging dir when that lies inside) and the `.committing` mark."""
    for entry in list(directory.iterdir()):
        if entry not in (keep, directory / COMMITTING):
            _remove(entry)


def _move(source: Path, target: Path) -> None:
    try:
        source.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)  # the output is a mount of its own: copy, then delete


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
