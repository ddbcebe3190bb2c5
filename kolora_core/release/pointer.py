"""latest.json, the pointer to a model's champion: its two forms, how they are read, and how a person moves it.

Forms:
* `{"name", "version", "prefix", "lora_sha256", "identity"}`: the champion is that published version (what a
  promotion writes, `kolora_core.release.publish`, and what `rollback` writes for another published version);
* `{"name", "version": null, "cleared_from": <version or null>}`: cleared by `reset` (`kolora champion --reset`):
  the next run has no champion, as before a model's first release.

Why a cleared pointer and not a deleted latest.json: a reset must never race a promotion, and a delete on a
condition (`If-Match`) is not what every store kolora runs on implements, while a conditional write is. Both
moves are one compare-and-swap from the latest.json they read first: if a promotion (or another person) moved it
in between, they are refused and write nothing; they are never retried, since the newer state is the one to look
at. Neither one deletes or rewrites a published version, and `rollback` points only at a version whose every
file matches its release.json (`kolora_core.release.intact`): a rollback onto a damaged version would only move
the damage.
"""

from __future__ import annotations

import json
from typing import Any

from kolora_core.errors import KoloraError, name_some
from kolora_core.release.intact import DamagedRelease, is_plain_version, published_versions, release_base, verify_release
from kolora_core.storage.objects import PreconditionFailed, Storage

LATEST = "latest.json"
CLEARED_FROM = "cleared_from"
UNREADABLE = "<unreadable latest.json>"


def canonical(value: dict[str, Any]) -> bytes:
    """The one byte form kolora writes JSON in, so the same pointer twice is the same object (a no-op swap)."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def pointer_for(release: dict[str, Any], version_prefix: str) -> dict[str, Any]:
    """latest.json pointing at `release`, published at `version_prefix`."""
    return {
        "name": release["name"],
        "version": release["version"],
        "prefix": version_prefix,
        "lora_sha256": release.get("lora_sha256"),
        "identity": release.get("identity"),
    }


def is_cleared(value: dict[str, Any]) -> bool:
    """Whether a latest.json read back is the cleared form (no champion)."""
    return value.get("version") is None and CLEARED_FROM in value


def pointed_version(data: bytes) -> str | None:
    """The version latest.json names; None when cleared; `UNREADABLE` when it holds no pointer at all."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return UNREADABLE
    if not isinstance(value, dict):
        return UNREADABLE
    return None if is_cleared(value) else str(value.get("version"))


def _swap(storage: Storage, key: str, body: bytes, current: tuple[bytes, str] | None, what: str) -> None:
    """Write `body` only over the `current` state read earlier (or only where there was none)."""
    try:
        if current is None:
            storage.put_if_absent(key, body)
        else:
            storage.put_if_match(key, body, current[1])
    except PreconditionFailed:
        now = storage.get_with_etag(key)
        seen = "nothing" if now is None else (pointed_version(now[0]) or "no release (cleared)")
        raise KoloraError(
            f"{key} changed while the {what} was being checked (it points at {seen} now): another promotion or "
            "person moved it first; nothing was written: look at the new state and run it again if it is still wanted"
        ) from None


def _was(current: tuple[bytes, str] | None) -> str:
    if current is None:
        return "no release"
    return pointed_version(current[0]) or "no release (cleared)"


def rollback(storage: Storage, prefix: str, name: str, version: str, reset_command: str = "`kolora champion --reset`") -> str:
    """Point `<prefix>/<name>/latest.json` at the published, intact `version`; returns what happened, in one line."""
    if not is_plain_version(version):
        raise KoloraError(f"--rollback {version!r} is not a version name (letters, digits, '.', '_', '-')")
    base = release_base(prefix, name)
    latest_key = f"{base}/{LATEST}"
    current = storage.get_with_etag(latest_key)  # first: the state this move replaces, and only that one
    published = published_versions(storage, base)
    if not storage.list(f"{base}/{version}/"):
        listed = f"published: {name_some(published, 5)}" if published else "none is published"
        raise KoloraError(f"{name} has no version {version} under {base}/ ({listed}): give a published version")
    try:
        release = verify_release(storage, base, name, version)
    except DamagedRelease as damaged:
        others = [v for v in published if v != version]
        choose = f"choose another version ({name_some(others, 5)}) or " if others else ""
        raise KoloraError(
            f"{name} {version} is damaged, so latest.json is not pointed at it: {damaged}; "
            f"{choose}clear latest.json with {reset_command}"
        ) from None
    body = canonical(pointer_for(release, f"{base}/{version}/"))
    if current is not None and current[0] == body:
        return f"{latest_key} already points at {name} {version} (every file checked)"
    _swap(storage, latest_key, body, current, f"rollback to {version}")
    return f"{latest_key}: {_was(current)} -> {version} (every file of {base}/{version}/ checked; nothing deleted)"


def reset(storage: Storage, prefix: str, name: str) -> str:
    """Clear `<prefix>/<name>/latest.json`: the next run has no champion; returns what happened, in one line."""
    latest_key = f"{release_base(prefix, name)}/{LATEST}"
    current = storage.get_with_etag(latest_key)
    if current is None:
        return f"no {latest_key}: {name} has no champion, nothing to clear"
    was = pointed_version(current[0])
    if was is None:
        return f"{latest_key} is cleared already: {name} has no champion"
    cleared_from = was if is_plain_version(was) else None  # what it named, where that was a version at all
    body = canonical({"name": name, "version": None, CLEARED_FROM: cleared_from})
    _swap(storage, latest_key, body, current, "reset")
    return f"cleared {latest_key} (it pointed at {was}): the next run of {name} has no champion; every published version is kept"
