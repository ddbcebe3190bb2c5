"""Promotion: a release directory into an S3 bucket's `<prefix>/<name>/<version>/` and `<prefix>/<name>/latest.json`.

What the workflow's `promote` step (`kolora publish`) and the local runner (after a passing run) both do:
`publish.publish_release` over the bucket, so release.json is written after every other file, latest.json
last, and a version that is already published is never written again (the same LoRA is a no-op, another
one is refused). The release comes from a local directory or from a key in the same bucket (a run's output).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.publish import publish_release
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store

DEFAULT_PREFIX = "models"


def promote(store: S3Store, release_dir: Path, prefix: str = DEFAULT_PREFIX) -> str:
    """Publish `release_dir` into `store`; returns one line saying what happened and where."""
    result = publish_release(S3StoreStorage(store), release_dir, prefix)
    where = f"s3://{store.bucket}/{result.version_prefix}"
    if result.status == "published":
        return f"published {where} ({len(result.uploaded)} objects written, latest: s3://{store.bucket}/{result.latest_key})"
    moved = "moved to it" if result.latest_key in result.uploaded else "unchanged"  # a rollback or reset may have moved it
    return f"already published {where} with the same LoRA; latest.json {moved}: s3://{store.bucket}/{result.latest_key}"


def promote_key(store: S3Store, key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Promote the release directory stored at `key` of the same bucket (e.g. `<workflow name>/release`)."""
    with tempfile.TemporaryDirectory(prefix="kolora-release-") as tmp:
        local = Path(tmp) / "release"
        if store.download(key, local) != "dir" or not (local / RELEASE_MANIFEST).is_file():
            raise KoloraError(f"s3://{store.bucket}/{key} is not a release directory (no {RELEASE_MANIFEST})")
        return promote(store, local, prefix)
