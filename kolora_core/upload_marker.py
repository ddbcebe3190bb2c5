"""The marker of a `kolora upload`: what makes a folder of the user's own images in the bucket complete and checkable.

Why: a folder copied into the bucket with `aws s3 sync` is read as it is when ingest starts, so a run (the nightly)
that starts mid-sync trains on part of it, and a file rewritten later is read without notice. `kolora upload`
therefore writes `<key>/.uploading` first, then the files, deletes the earlier upload's files that the folder no
longer has, writes `<key>/_SUCCESS` (each file's size and sha256) and only then deletes `.uploading`. The stage
shell checks every upload it is given with `check_upload`:

* one that holds `.uploading` (being written now, or cut off) is refused as transient (exit 75, the workflow
  retries it; a cut-off upload is finished by running `kolora upload` again);
* with a `_SUCCESS`: a listed file that is missing or differs in size or sha256, and a file the marker does not list,
  are refused in one line naming the file, also as transient: the pod may have listed the key just before an upload
  over it began (Argo lists, then fetches one object after another), which a retry reads whole; a folder rewritten
  by another tool since is refused again on every retry, and the line says to upload it again;
* one that holds another kolora upload below its root (a key naming a parent of uploads) is refused: name one;
* without one (a plain sync; a `_SUCCESS` of another writer, such as the empty one Spark leaves beside its parquet
  files, counts as none): read as before, with one log line saying it could not be checked.

The marker is untrusted data: parsed as JSON, its names confined to the folder, sizes and hashes type-checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from kolora_core.errors import KoloraError, TransientError, name_some
from kolora_core.relative_names import is_portable_name
from kolora_core.stages import COMPLETE_MARKER

UPLOADING = ".uploading"
KIND = "kolora-upload"
RESERVED = (COMPLETE_MARKER, UPLOADING)
_SHA256 = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("kolora")


@dataclass(frozen=True)
class UploadFile:
    """One file of a folder to upload: its name inside the folder (POSIX), where it is, its size and sha256."""

    rel: str
    path: Path
    size: int
    sha256: str
    mtime_ns: int

    def changed(self) -> bool:
        """Whether the file is no longer what was hashed (gone, or another size or time)."""
        try:
            stat = self.path.stat()
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns)


def _unreadable(exc: OSError) -> NoReturn:
    raise KoloraError(f"{exc.filename} cannot be read ({exc.strerror or exc}): fix its permissions or move it out") from None


def _sha256(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        _unreadable(exc)


def _key_part(path: Path, rel: str) -> None:
    """A name S3 and Argo can carry as it is: UTF-8, no empty, '.' or '..' part, no backslash."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # printable: the bytes as \xNN
        raise KoloraError(f"{shown}: its name is not UTF-8, which an object key must be: rename it") from None
    if not is_portable_name(rel):
        raise KoloraError(f"{path}: its name cannot be an object key as it is: rename it")


def scan_folder(folder: Path) -> list[UploadFile]:
    """Every file under `folder`, sorted; a symbolic link, a name no key can carry or a file named like a marker is
    refused in one line, before anything is sent (a refusal after `.uploading` would leave the key unreadable)."""
    if not folder.is_dir():
        raise KoloraError(f"{folder} is not a folder: give the folder that holds the images (and their captions)")
    found: list[UploadFile] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable):
        dirnames.sort()
        if clash := sorted(set(dirnames) & set(RESERVED)):
            raise KoloraError(f"{Path(dirpath) / clash[0]}: {clash[0]} is the name of an upload's own marker: rename it")
        for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise KoloraError(f"{path} is a symbolic link: put the file itself there (an upload sends files, not links)")
            if name in RESERVED:
                raise KoloraError(f"{path}: {name} is the name of an upload's own marker: rename or remove that file")
            _key_part(path, rel)
            if path.is_file():
                stat = path.stat()
                found.append(UploadFile(rel, path, stat.st_size, _sha256(path), stat.st_mtime_ns))
    return found


def marker_text(key: str, files: list[UploadFile]) -> str:
    """The `_SUCCESS` of an upload of `files` at `key`."""
    listed = {f.rel: {"size": f.size, "sha256": f.sha256} for f in files}
    return json.dumps({"kind": KIND, "key": key, "files": listed}, indent=1, sort_keys=True) + "\n"


def listed_files(text: bytes | str, what: str) -> dict[str, dict[str, Any]] | None:
    """The files of a `kolora upload` marker, every entry checked before one is trusted; None for a `_SUCCESS` of
    another writer (Spark and Hadoop leave an empty one beside their parquet files; a kolora stage's commit)."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    redo = "upload the folder again with kolora upload"
    files = data.get("files")
    if not isinstance(files, dict):
        raise KoloraError(f"{what}: its {COMPLETE_MARKER} of kolora upload lists no files: {redo}")
    for rel, entry in files.items():
        if not is_portable_name(rel):
            raise KoloraError(f"{what}: its {COMPLETE_MARKER} names {rel!r}, which is not a file inside the upload: {redo}")
        size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
        if type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise KoloraError(f"{what}: its {COMPLETE_MARKER} entry for {rel!r} has no size and sha256: {redo}")
    return files


def check_upload(folder: Path, what: str) -> None:
    """Refuse an upload that is being written, incomplete, changed or added to since `kolora upload` (module doc)."""
    if (folder / UPLOADING).exists():
        raise TransientError(
            f"{what} is being written ({UPLOADING} is there: kolora upload is running, or was cut off): rerun once it "
            "has finished; a cut-off upload is finished by running kolora upload again"
        )
    present = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}
    nested = sorted(
        rel.rsplit("/", 1)[0]
        for rel, p in present.items()
        if rel.endswith(f"/{COMPLETE_MARKER}") and p.is_file() and listed_files(p.read_bytes(), what) is not None
    )
    if nested:
        raise KoloraError(f"{what} holds the kolora upload(s) {name_some(nested, 3)}: name one of them as the key")
    marker = folder / COMPLETE_MARKER
    files = listed_files(marker.read_bytes(), what) if marker.is_file() else None
    if files is None:
        log.info("%s has no %s of kolora upload: read as it is, its files cannot be checked", what, COMPLETE_MARKER)
        return
    redo = (
        "if an upload to it is running, this is retried once it has finished; if another tool wrote to it, "
        "upload the folder again with kolora upload (--replace deletes what no upload of the key wrote)"
    )
    extra = sorted(set(present) - set(files) - {COMPLETE_MARKER})
    if extra:
        shown = name_some(extra, 3)
        raise TransientError(f"{what} holds {len(extra)} file(s) its {COMPLETE_MARKER} does not list ({shown}): {redo}")
    for rel, entry in sorted(files.items()):
        path = present.get(rel)
        if path is None or path.is_symlink():
            raise TransientError(f"{what}: {rel} is listed in its {COMPLETE_MARKER} but did not arrive: {redo}")
        if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            raise TransientError(f"{what}: {rel} differs from what kolora upload sent: {redo}")
    log.info("%s: %d file(s) checked against the %s of kolora upload", what, len(files), COMPLETE_MARKER)
