"""The champion: the release `<prefix>/<name>/latest.json` points at, fetched for a candidate to be compared with.

`fetch_champion` fills a directory in the format `kolora_core.evaluation.champion` owns, from any `Storage`:
`champion.json`, and from the release only what comparison needs (release.json, report.json, grid.png, the
story images and generations.jsonl; never the LoRA files). No latest.json means no champion yet, the
first run of a model: `{"status": "none"}`, not an error. It only reads, so a retry is always safe.

Nothing read from the bucket is trusted: the pointer must name this model and a plain version, the release
must be that version, every downloaded key is a plain relative path listed in its release.json, and every
file must match the sha256 release.json records for it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError
from kolora_core.evaluation.champion import CHAMPION_JSON, FOUND, IMAGES_DIR, NONE
from kolora_core.evaluation.layout import GRID, REPORT
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.publish import LATEST
from kolora_core.storage.objects import Storage


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise KoloraError(f"{where} is not valid JSON: fix or remove it, or publish a new release") from None
    if not isinstance(value, dict):
        raise KoloraError(f"{where} must hold a JSON object")
    return value


def _plain_version(version: Any, where: str) -> str:
    try:
        PublishConfig(version=version)
    except ValidationError:
        raise KoloraError(f"{where} names version {version!r}, which is not a plain version name") from None
    return str(version)


def _plain_relative(rel: str, where: str) -> str:
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or "\\" in rel or any(p in {".", ".."} for p in parts):
        raise KoloraError(f"{where} lists file {rel!r}, which is not a plain relative path")
    return rel


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def fetch_champion(storage: Storage, prefix: str, name: str, out: Path) -> dict[str, Any]:
    """Write the champion of `<prefix>/<name>` into `out` (an empty staging dir); returns champion.json's content."""
    base = f"{prefix.strip('/')}/{name}"
    latest_key = f"{base}/{LATEST}"
    if not storage.exists(latest_key):
        pointer: dict[str, Any] = {"status": NONE, "name": name, "reason": f"no {latest_key}: {name} has no release yet"}
        _write(out / CHAMPION_JSON, (json.dumps(pointer, indent=2) + "\n").encode())
        return pointer
    latest = _json_object(storage.get(latest_key), latest_key)
    if latest.get("name") != name:
        raise KoloraError(f"{latest_key} names model {latest.get('name')!r}, not {name!r}: fix or remove that pointer")
    version = _plain_version(latest.get("version"), latest_key)
    version_prefix = f"{base}/{version}/"
    manifest_key = version_prefix + RELEASE_MANIFEST
    if not storage.exists(manifest_key):
        raise KoloraError(f"{latest_key} points at {version_prefix}, which has no {RELEASE_MANIFEST}: republish that version")
    manifest = storage.get(manifest_key)
    release = _json_object(manifest, manifest_key)
    if (release.get("name"), release.get("version")) != (name, version):
        raise KoloraError(f"{manifest_key} is not {name} {version}: the bucket holds another release under that key")
    files = release.get("files")
    if not isinstance(files, dict):
        raise KoloraError(f"{manifest_key} lists no files")
    wanted = [REPORT, GRID, *sorted(rel for rel in files if rel.startswith(f"{IMAGES_DIR}/"))]
    for rel in wanted:
        facts = files.get(rel)
        if not isinstance(facts, dict):
            raise KoloraError(f"{manifest_key} lists no {rel}: the champion cannot be compared; publish a new release")
        data = storage.get(version_prefix + _plain_relative(rel, manifest_key))
        if hashlib.sha256(data).hexdigest() != facts.get("sha256"):
            raise KoloraError(f"{version_prefix}{rel} does not match its sha256 in {RELEASE_MANIFEST}: the release was changed")
        _write(out / rel, data)
    _write(out / RELEASE_MANIFEST, manifest)
    pointer = {
        "status": FOUND,
        "name": name,
        "version": version,
        "prefix": version_prefix,
        "lora_sha256": release.get("lora_sha256"),
        "identity": release.get("identity"),
    }
    _write(out / CHAMPION_JSON, (json.dumps(pointer, indent=2) + "\n").encode())
    return pointer
