"""Publishing an assembled release on any `Storage`, never overwriting a published version, safe under concurrency.

`publish_release` writes `<prefix>/<name>/<version>/` in this order, each step a conditional write where it
decides something:

1. `claim.json` with `If-None-Match: *`: which release may write this version. Exactly one release wins a
   version (two processes promoting different LoRAs under one version: the other gets a one-line error and
   writes nothing); the same release directory again (a retried promote) holds the same claim; a claim never
   published is taken over after `CLAIM_LEASE_S` (its publisher died midway).
2. every file of the release (plain puts: only the claim's holder gets here);
3. `release.json` with `If-None-Match: *`: the version is published (its presence means complete);
4. `<prefix>/<name>/latest.json` (its forms: `kolora_core.release.pointer`) by compare-and-swap (`If-Match` on
   the ETag read, `If-None-Match` for the first): it moves only from the state the evaluation saw. A release
   whose gate compared it with champion vX (`gate.champion` in release.json) moves latest.json only while it
   still points at vX (or, with no champion then, only while there is none or it is cleared); if another
   promotion moved it meanwhile, this one is refused (rerun to compare with the new champion). A release
   without that record (published by hand) just becomes the latest, retrying the swap when another writer got
   in between.

A version whose release.json exists is never written again: the same model again (same release identity:
the LoRA files' content; reports and images may differ between runs) is a no-op that only makes sure
latest.json points at it, once every file of the published version is checked against its release.json (a
damaged version is refused, never made the champion again: `kolora_core.release.intact`); a different model
under that version is refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError, TransientError
from kolora_core.release.assemble import MODEL_FILES, RELEASE_MANIFEST, file_sha256
from kolora_core.release.intact import DamagedRelease, is_plain_version, json_object, plain_relative, release_base, verify_release
from kolora_core.release.pointer import LATEST, canonical, pointed_version, pointer_for
from kolora_core.storage.objects import PreconditionFailed, Storage

__all__ = ["LATEST", "PublishResult", "move_latest", "publish_release"]
log = logging.getLogger("kolora.publish")
CLAIM = "claim.json"
CLAIM_LEASE_S = 3600  # a publish uploads a LoRA, its exports and a story of images: minutes, not an hour
LATEST_ATTEMPTS = 5


@dataclass
class PublishResult:
    status: str  # "published" or "already-published"
    version_prefix: str
    latest_key: str
    uploaded: list[str] = field(default_factory=list)


def _model_identity(release: dict[str, Any]) -> dict[str, Any]:
    """What makes two releases the same model: the content of the LoRA and its exports (tensor bytes and
    metadata, canonically ordered; `assemble.release_identity`). Reports and images may differ between runs."""
    files = release.get("files", {})
    identity = release.get("identity") or {k: files[k].get("sha256") for k in MODEL_FILES if k in files}  # a v1 release
    return {"name": release.get("name"), "version": release.get("version"), "identity": identity}


def _refuse_other(existing: dict[str, Any], release: dict[str, Any], version_prefix: str, how: str) -> None:
    """A one-line error unless `existing` (a release.json or claim.json read back) is the same model."""
    if _model_identity(existing) == _model_identity(release):
        return
    theirs, mine = str(existing.get("lora_sha256"))[:12], str(release.get("lora_sha256"))[:12]
    raise KoloraError(
        f"{release['name']} version {release['version']} {how} at {version_prefix} with other contents "
        f"(LoRA {theirs} vs {mine}): published versions are never overwritten; set publish.version to a new version"
    )


def _claim(storage: Storage, version_prefix: str, release: dict[str, Any], manifest: bytes) -> None:
    """Win the right to write this version, or hold it already (the same release directory: a retried promote).

    A claim whose release.json never came (its publisher died midway: an evicted pod, a run stopped for good) is
    taken over by compare-and-swap once it is CLAIM_LEASE_S old, longer than any publish takes: a rerun of the
    same LoRA then completes the version instead of waiting for somebody to delete the claim by hand.
    """
    key = version_prefix + CLAIM
    claim = _model_identity(release) | {
        "lora_sha256": release.get("lora_sha256"),
        "release_sha256": hashlib.sha256(manifest).hexdigest(),
        "claimed_at": round(time.time()),
    }
    try:
        storage.put_if_absent(key, canonical(claim))
        return
    except PreconditionFailed:
        current = storage.get_with_etag(key)
    if current is None:  # released between the two requests: a retry of the step finds it free
        raise TransientError(f"{key} changed while it was being claimed: rerun the promotion")
    held = json_object(current[0], key, release["version"])
    _refuse_other(held, release, version_prefix, "is being published by another process")
    if held.get("release_sha256") == claim["release_sha256"]:
        return
    claimed_at = held.get("claimed_at")
    age = time.time() - claimed_at if isinstance(claimed_at, int | float) else float("inf")  # a claim of older kolora
    if age >= CLAIM_LEASE_S:
        log.info("%s was claimed %.0f s ago and never published: taking it over", key, age)
        try:
            storage.put_if_match(key, canonical(claim), current[1])
            return
        except PreconditionFailed:
            pass  # another rerun took it over first
    raise KoloraError(
        f"{release['name']} version {release['version']} is being published by another run with the same LoRA "
        f"({key}); rerun once it has finished (a claim that is never published is taken over "
        f"{CLAIM_LEASE_S // 60} min after it was made)"
    )


def _expected_latest(release: dict[str, Any]) -> tuple[bool, str | None]:
    """(constrained, version): the latest.json version the evaluation compared with (None: there was none)."""
    champion = (release.get("gate") or {}).get("champion")
    if not isinstance(champion, dict) or champion.get("status") not in {"found", "none"}:
        return False, None
    return True, champion.get("version") if champion["status"] == "found" else None


def move_latest(storage: Storage, latest_key: str, body: bytes, release: dict[str, Any]) -> bool:
    """Point latest.json at this release by compare-and-swap; returns whether it was written."""
    constrained, expected = _expected_latest(release)
    for _ in range(LATEST_ATTEMPTS):
        current = storage.get_with_etag(latest_key)
        if current is not None and current[0] == body:
            return False
        seen = None if current is None else pointed_version(current[0])  # a cleared latest.json: none
        if constrained and seen != expected:
            raise KoloraError(
                f"{latest_key} points at {seen or 'no release'}, but {release['name']} {release['version']} was evaluated "
                f"against {expected or 'no champion'}: another promotion moved it meanwhile; start a new run to compare "
                "with it (a retry keeps the comparison it made)"
            )
        try:
            if current is None:
                storage.put_if_absent(latest_key, body)
            else:
                storage.put_if_match(latest_key, body, current[1])
            return True
        except PreconditionFailed:
            log.info("%s changed while it was being replaced; reading it again", latest_key)
    # other writers won every swap: a retry of the step, 30 s later, may find it still (exit 75, retried)
    raise TransientError(f"{latest_key} kept changing under {LATEST_ATTEMPTS} attempts to replace it: rerun the promotion")


def _refuse_other_or_damaged(storage: Storage, base: str, release: dict[str, Any], published: bytes) -> None:
    """The version is published already (`published`: its release.json): make it the latest only if it is this
    model and still whole. A release.json that is not even JSON is damage like any other, with the same way out."""
    name, version = release["name"], release["version"]
    try:
        held = json_object(published, f"{base}/{version}/{RELEASE_MANIFEST}", version)
        _refuse_other(held, release, f"{base}/{version}/", "is already published")
        verify_release(storage, base, name, version)
    except DamagedRelease as damaged:
        raise KoloraError(
            f"{name} version {version} is published at {base}/{version}/ but damaged ({damaged}); published versions "
            "are never rewritten and a damaged one is never made the latest: publish this LoRA under a new version "
            f"(publish.version; for a workflow run `-p config='publish: {{version: {version}-2}}'`)"
        ) from None


def _local_manifest(release_dir: Path) -> tuple[bytes, dict[str, Any]]:
    """release.json of `release_dir` and what it holds, checked as a published one is (`intact`) before anything is
    read or sent. Why: the directory may be a run's output downloaded from the bucket (`--run-release`: not trusted;
    a listed '../x' was read from outside it, a name with '/' keyed outside `<prefix>/<name>/`), or the wrong folder
    (a champion directory holds a release.json but no LoRA: a traceback at the first missing file)."""
    path = release_dir / RELEASE_MANIFEST
    if not path.is_file():
        raise KoloraError(f"{path} not found: pass the publish stage's release directory")
    manifest = path.read_bytes()
    try:
        release = json_object(manifest, str(path))
        name, version, files = release.get("name"), release.get("version"), release.get("files")
        if not (is_plain_version(name) and is_plain_version(version) and isinstance(files, dict)):
            raise DamagedRelease(str(path), f"names no model, version and files (name {name!r}, version {version!r})")
        for rel, facts in files.items():
            file = release_dir / plain_relative(rel, str(path), version)
            if file.is_symlink() or not file.is_file():
                raise DamagedRelease(str(file), f"is missing, though {RELEASE_MANIFEST} lists it")
            if not isinstance(facts, dict) or file_sha256(file) != facts.get("sha256"):
                raise DamagedRelease(str(file), f"does not match its sha256 in {RELEASE_MANIFEST}: the release dir was changed")
    except DamagedRelease as damaged:
        raise KoloraError(f"{damaged}: pass the publish stage's release directory") from None
    return manifest, release


def publish_release(storage: Storage, release_dir: Path, prefix: str = "models") -> PublishResult:
    """Upload an assembled release to `<prefix>/<name>/<version>/`, never overwriting a published version.

    A crash anywhere leaves either an unpublished version (no release.json; the same release directory
    completes it on the next attempt) or a published one that the next attempt accepts.
    """
    manifest, release = _local_manifest(release_dir)
    name, version = release["name"], release["version"]
    base = release_base(prefix, name)
    version_prefix, latest_key = f"{base}/{version}/", f"{base}/{LATEST}"
    result = PublishResult("published", version_prefix, latest_key)
    published = version_prefix + RELEASE_MANIFEST
    existing = storage.get_with_etag(published)
    if existing is not None:
        _refuse_other_or_damaged(storage, base, release, existing[0])
        result.status = "already-published"
    else:
        _claim(storage, version_prefix, release, manifest)
        for rel in sorted(release["files"]):
            storage.put(version_prefix + rel, release_dir / rel)
            result.uploaded.append(version_prefix + rel)
        storage.put_if_absent(published, manifest)
        result.uploaded.append(published)
    if move_latest(storage, latest_key, canonical(pointer_for(release, version_prefix)), release):
        result.uploaded.append(latest_key)
    return result
