"""The object-store interface that publishing writes through, and its two implementations.

`Storage` is the four operations a release needs (keys are '/'-separated, no leading slash, never `..`);
`LocalStorage` is a directory (tests, a shared filesystem, a local mirror of the bucket) and
`S3StoreStorage` adapts the runner's `S3Store`. `kolora_core.release.publish` only sees `Storage`, so
the no-overwrite rules are tested on a directory and hold on any bucket.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from kolora_core.errors import KoloraError


class Storage(Protocol):
    """The four object-store operations publishing needs (keys are '/'-separated, no leading slash)."""

    def put(self, key: str, data: bytes | Path) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


def _safe_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in {"..", "."} for p in parts):
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
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        return sorted(k for k in keys if k.startswith(prefix))


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
