"""The object-store interface that publishing writes through, and its two implementations.

`Storage` is what a release needs (keys are '/'-separated, no leading slash, never `..`): plain put/get/
exists/list, and the conditional writes that make concurrent publishing safe: `put_if_absent` (S3's
`If-None-Match: *`), `put_if_match` (`If-Match: <ETag>`, a compare-and-swap) and `get_with_etag`.
`LocalStorage` is a directory (tests, a shared filesystem, a local mirror of the bucket; the same
semantics from an atomic hard link and a file lock) and `S3StoreStorage` adapts the runner's `S3Store`
(whose conditional writes these are; `PreconditionFailed` is its error too).
`kolora_core.release.publish` only sees `Storage`, so the no-overwrite rules hold on any of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from kolora_core.errors import KoloraError
from kolora_core.relative_names import is_relative_name
from kolora_core.storage.errors import ArtifactNotFound, PreconditionFailed


class Storage(Protocol):
    """The object-store operations publishing needs (keys are '/'-separated, no leading slash)."""

    def put(self, key: str, data: bytes | Path) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object and the ETag to pass to `put_if_match`; None if there is none."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create `key` only if it does not exist; returns its ETag. The same bytes already there count as written
        (a retried request whose first attempt landed); other bytes raise `PreconditionFailed`."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace `key` only if its ETag is still `etag`; returns the new ETag, else `PreconditionFailed`."""
        ...


def _safe_key(key: str) -> str:
    if not is_relative_name(key):
        raise KoloraError(f"storage key '{key}' is not a plain relative key")
    return key


class LocalStorage:
    """A directory as an object store (tests, a shared filesystem, or a local mirror of the bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put(self, key: str, data: bytes | Path) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if isinstance(data, Path):
            shutil.copyfile(data, tmp)
        else:
            tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        if not self.root.exists():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file() and not _internal(p))
        return sorted(k for k in keys if k.startswith(prefix))

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()  # every write replaces the file atomically: no lock needed to read
        except FileNotFoundError:
            return None
        return data, _etag(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        tmp = Path(name)
        try:
            os.link(tmp, path)  # atomic: fails if the name exists, whoever created it
        except FileExistsError:
            if path.read_bytes() != data:
                raise PreconditionFailed(f"{path} already exists with other contents: another writer won") from None
        finally:
            tmp.unlink()
        return _etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        path = self._path(key)
        with self._locked(path):
            if not path.is_file() or _etag(path.read_bytes()) != etag:
                raise PreconditionFailed(f"{path} changed since it was read (ETag {etag}): another writer won")
            self.put(key, data)
        return _etag(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """An exclusive lock per key (a `.<name>.lock` file beside it) for read-compare-replace."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _internal(path: Path) -> bool:
    """LocalStorage's own temp and lock files, never objects."""
    return path.name.endswith((".tmp", ".lock"))


def _etag(data: bytes) -> str:
    """An S3-style ETag (the quoted MD5 of a single-part object)."""
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


class S3StoreStorage:
    """`Storage` over the runner's `kolora_core.storage.s3.S3Store` (one bucket, one endpoint)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def put(self, key: str, data: bytes | Path) -> None:
        if isinstance(data, Path):
            self.store.upload_file(data, _safe_key(key))
            return
        with tempfile.TemporaryDirectory(prefix="kolora-put-") as tmp:
            path = Path(tmp) / "object"
            path.write_bytes(data)
            self.store.upload_file(path, _safe_key(key))

    def get(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="kolora-get-") as tmp:
            path = Path(tmp) / "object"
            self.store.download_file(_safe_key(key), path)
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        return bool(self.store.exists(_safe_key(key)))

    def list(self, prefix: str) -> list[str]:
        return sorted(self.store.list_keys(prefix))

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            return self.store.get_with_etag(_safe_key(key))
        except ArtifactNotFound:
            return None

    def put_if_absent(self, key: str, data: bytes) -> str:
        return str(self.store.put_if_absent(_safe_key(key), data))

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        return str(self.store.put_if_match(_safe_key(key), data, etag))
