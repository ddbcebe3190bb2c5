"""Publishing an assembled release on any `Storage`, never overwriting a published version.

`publish_release` uploads the directory to `<prefix>/<name>/<version>/` with `release.json` written LAST
(its presence means the version is complete), then the `<prefix>/<name>/latest.json` pointer, last of all.
A version whose release.json exists is never written again: the same model again (same LoRA and exports;
reports may differ in timings) is a no-op that only makes sure `latest.json` points at it (so a run that
died between the two finishes); a different model under that version is refused. `latest.json` follows
the last successful publish call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.release.assemble import MODEL_FILES, RELEASE_MANIFEST, file_sha256
from kolora_core.storage.objects import Storage

LATEST = "latest.json"


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


def publish_release(storage: Storage, release_dir: Path, prefix: str = "models") -> PublishResult:
    """Upload an assembled release to `<prefix>/<name>/<version>/`, never overwriting a published version.

    Order: every file but release.json, then release.json (the version is now published), then
    `<prefix>/<name>/latest.json`. A crash anywhere leaves either an unpublished partial version (no
    release.json: the next attempt uploads it again) or a published one that the next attempt accepts.
    """
    manifest = release_dir / RELEASE_MANIFEST
    if not manifest.is_file():
        raise KoloraError(f"{manifest} not found: pass the publish stage's release directory")
    release = json.loads(manifest.read_text(encoding="utf-8"))
    name, version = release["name"], release["version"]
    base = f"{prefix.strip('/')}/{name}"
    version_prefix, latest_key = f"{base}/{version}/", f"{base}/{LATEST}"
    for rel, facts in release["files"].items():
        if file_sha256(release_dir / rel) != facts["sha256"]:
            raise KoloraError(f"{release_dir / rel} does not match its sha256 in {RELEASE_MANIFEST}: the release dir was changed")
    result = PublishResult("published", version_prefix, latest_key)
    published = version_prefix + RELEASE_MANIFEST
    if storage.exists(published):
        existing = json.loads(storage.get(published))
        if _model_identity(existing) != _model_identity(release):
            raise KoloraError(
                f"{name} version {version} is already published at {version_prefix} with other contents "
                f"(LoRA {str(existing.get('lora_sha256'))[:12]} vs {release['lora_sha256'][:12]}): published versions are "
                "never overwritten; set publish.version to a new version"
            )
        result.status = "already-published"
    else:
        for rel in sorted(release["files"]):
            storage.put(version_prefix + rel, release_dir / rel)
            result.uploaded.append(version_prefix + rel)
        storage.put(published, manifest.read_bytes())
        result.uploaded.append(published)
    pointer = {"name": name, "version": version, "prefix": version_prefix, "lora_sha256": release["lora_sha256"]}
    body = (json.dumps(pointer, indent=2, sort_keys=True) + "\n").encode()
    if not storage.exists(latest_key) or storage.get(latest_key) != body:
        storage.put(latest_key, body)
        result.uploaded.append(latest_key)
    return result
