"""The champion: the release `<prefix>/<name>/latest.json` points at, fetched for a candidate to be compared with.

`fetch_champion` fills a directory in the format `kolora_core.evaluation.champion` owns, from any `Storage`:
`champion.json`, and from the release only what comparison needs (release.json, report.json, grid.png, the
story images and generations.jsonl; never the LoRA files). No latest.json means no champion yet, the
first run of a model: `{"status": "none"}`, not an error; so does a latest.json cleared by
`kolora champion --reset` (`kolora_core.release.pointer`). It only reads, so a retry is always safe.

Nothing read from the bucket is trusted (`kolora_core.release.intact`): the pointer must name this model and a
plain version, the release must be that version, every downloaded key is a plain relative path listed in its
release.json, and every file must match the sha256 release.json records for it. A champion that fails any of
this is `DamagedRelease`, never "no champion": a candidate promoted over a damaged champion would hide the
damage, and its gate would have compared with nothing (`kolora_core.release.recovery` says what to do instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kolora_core.evaluation.champion import CHAMPION_JSON, FOUND, IMAGES_DIR, NONE
from kolora_core.evaluation.layout import GRID, REPORT
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.intact import DamagedRelease, checked_files, is_plain_version, json_object, read_release, release_base
from kolora_core.release.pointer import CLEARED_FROM, LATEST, is_cleared
from kolora_core.storage.objects import Storage


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _none(out: Path, name: str, reason: str) -> dict[str, Any]:
    pointer: dict[str, Any] = {"status": NONE, "name": name, "reason": reason}
    _write(out / CHAMPION_JSON, (json.dumps(pointer, indent=2) + "\n").encode())
    return pointer


def pointed_release(storage: Storage, latest_key: str, name: str) -> tuple[str | None, dict[str, Any]]:
    """(version, latest.json) of the pointer at `latest_key`: the version None when it is cleared; `DamagedRelease`
    when it names another model or no plain version."""
    latest = json_object(storage.get(latest_key), latest_key)
    if latest.get("name") != name:
        raise DamagedRelease(latest_key, f"names model {latest.get('name')!r}, not {name!r}")
    if is_cleared(latest):
        return None, latest
    version = latest.get("version")
    if not is_plain_version(version):
        raise DamagedRelease(latest_key, f"names version {version!r}, which is not a plain version name")
    return str(version), latest


def fetch_champion(storage: Storage, prefix: str, name: str, out: Path) -> dict[str, Any]:
    """Write the champion of `<prefix>/<name>` into `out` (an empty staging dir); returns champion.json's content."""
    base = release_base(prefix, name)
    latest_key = f"{base}/{LATEST}"
    if not storage.exists(latest_key):
        return _none(out, name, f"no {latest_key}: {name} has no release yet")
    version, latest = pointed_release(storage, latest_key, name)
    if version is None:
        was = latest[CLEARED_FROM] if is_plain_version(latest[CLEARED_FROM]) else "no version"  # only printed, still checked
        return _none(out, name, f"{latest_key} was cleared (kolora champion --reset; it pointed at {was}): no champion")
    manifest, release = read_release(storage, base, name, version)
    wanted = [REPORT, GRID, *sorted(rel for rel in release["files"] if rel.startswith(f"{IMAGES_DIR}/"))]
    for rel, data in checked_files(storage, base, release, wanted):
        _write(out / rel, data)
    _write(out / RELEASE_MANIFEST, manifest)
    pointer = {
        "status": FOUND,
        "name": name,
        "version": version,
        "prefix": f"{base}/{version}/",
        "lora_sha256": release.get("lora_sha256"),
        "identity": release.get("identity"),
    }
    _write(out / CHAMPION_JSON, (json.dumps(pointer, indent=2) + "\n").encode())
    return pointer
