"""Whether a published release is whole: the checks every reader makes before it trusts a version of the store.

Why one place: the champion step, a rollback and a re-promotion of a published version must agree on what
"damaged" means and name the same object when it is, or a release one of them accepts is one another refuses.
Nothing read from the bucket is trusted: a version is a plain name, its release.json must be that release,
every listed file a plain relative path (no key outside `<prefix>/<name>/<version>/`) whose bytes match the
sha256 release.json records. A failed check is `DamagedRelease`, which names the object and what is wrong, so
the caller can say what to do about it (`kolora_core.release.recovery`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError
from kolora_core.relative_names import is_portable_name
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.storage.errors import ArtifactNotFound
from kolora_core.storage.objects import Storage

INCOMPLETE = "is missing: the version was never completely published, or it was deleted since"  # release.json is written last


class DamagedRelease(KoloraError):
    """`key` fails a check (`problem`); `version` is the release it belongs to (None: the pointer itself), `release`
    its release.json where that could be read (it records the champion the release replaced)."""

    def __init__(self, key: str, problem: str, version: str | None = None, release: dict[str, Any] | None = None) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem, self.version, self.release = key, problem, version, release


def release_base(prefix: str, name: str) -> str:
    """`<prefix>/<name>`: where a model's versions and its latest.json live. `prefix` as `publish.prefix` has it (the
    commands check their --prefix by that rule: `kolora_core.cli.release_store_params`), taken as given: stripping a
    '/' here made `models/` name the releases of `models` while the config and the workflow parameter refuse it."""
    return f"{prefix}/{name}"


def is_plain_version(version: Any) -> bool:
    """A version name publishing accepts (publish.version's rule: no '/', no '..', not 'latest')."""
    try:
        PublishConfig(version=version)
    except ValidationError:
        return False
    return isinstance(version, str)


def json_object(data: bytes, key: str, version: str | None = None) -> dict[str, Any]:
    """An object read back from the store as JSON, or `DamagedRelease`."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise DamagedRelease(key, "is not valid JSON", version) from None
    if not isinstance(value, dict):
        raise DamagedRelease(key, "does not hold a JSON object", version)
    return value


def plain_relative(rel: str, manifest_key: str, version: str) -> str:
    """`rel` where it is a plain relative path (a listed file of a release); else `DamagedRelease`."""
    if not is_portable_name(rel):
        raise DamagedRelease(manifest_key, f"lists file {rel!r}, which is not a plain relative path", version)
    return rel


def get_or_none(storage: Storage, key: str) -> bytes | None:
    """The object, or None where there is none (the S3 store and a directory say so differently)."""
    try:
        return storage.get(key)
    except (ArtifactNotFound, FileNotFoundError):
        return None


def read_release(storage: Storage, base: str, name: str, version: str) -> tuple[bytes, dict[str, Any]]:
    """release.json of `<base>/<version>/` (bytes and content), checked to be `name` `version` with a file list."""
    manifest_key = f"{base}/{version}/{RELEASE_MANIFEST}"
    manifest = get_or_none(storage, manifest_key)
    if manifest is None:
        raise DamagedRelease(manifest_key, INCOMPLETE, version)
    release = json_object(manifest, manifest_key, version)
    if (release.get("name"), release.get("version")) != (name, version):
        found = f"{release.get('name')} {release.get('version')}"
        raise DamagedRelease(manifest_key, f"is {found}, not {name} {version}: another release under that key", version)
    if not isinstance(release.get("files"), dict):
        raise DamagedRelease(manifest_key, "lists no files", version, release)
    return manifest, release


def checked_files(storage: Storage, base: str, release: dict[str, Any], rels: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(rel, bytes) of each of `rels`, each listed in `release` and matching its sha256; `DamagedRelease` at the first
    that is not. Lazily: a caller writes each file as it comes and stops at the damage."""
    version = str(release["version"])
    prefix, manifest_key = f"{base}/{version}/", f"{base}/{version}/{RELEASE_MANIFEST}"
    for rel in rels:
        facts = release["files"].get(rel)
        if not isinstance(facts, dict):
            raise DamagedRelease(manifest_key, f"lists no {rel}", version, release)
        key = prefix + plain_relative(rel, manifest_key, version)
        data = get_or_none(storage, key)
        if data is None:
            raise DamagedRelease(key, f"is missing, though {RELEASE_MANIFEST} lists it", version, release)
        if hashlib.sha256(data).hexdigest() != facts.get("sha256"):
            problem = f"does not match its sha256 in {RELEASE_MANIFEST}: the release was changed after it was published"
            raise DamagedRelease(key, problem, version, release)
        yield rel, data


def verify_release(storage: Storage, base: str, name: str, version: str) -> dict[str, Any]:
    """The release.json of a version whose every file is intact (the LoRA included: what users download)."""
    _, release = read_release(storage, base, name, version)
    for _ in checked_files(storage, base, release, sorted(release["files"])):
        pass
    return release


def published_versions(storage: Storage, base: str) -> list[str]:
    """The versions under `<base>/` that have a release.json (listed, not checked), sorted by name."""
    found = set()
    for key in storage.list(f"{base}/"):
        version, _, rest = key[len(base) + 1 :].partition("/")
        if rest == RELEASE_MANIFEST and is_plain_version(version):
            found.add(version)
    return sorted(found)
