"""Promotion: assemble a release of a LoRA whose evaluation passed, and publish it without ever overwriting one.

Two halves, so that no stage knows about S3:

* `assemble_release` (the `publish` stage, `jobs/publish.py`): only when the evaluate report's gate is
  `passed`, copy the LoRA (plus `lora_diffusers.safetensors` / `lora_kohya.safetensors` exports and
  `train_summary.json` where the train stage wrote them), report.json, report.html and grid.png into the
  release directory with a `release.json` naming the model, the version and every file's sha256.
* `publish_release` (for the workflow / runner, on any `Storage`): upload that directory to
  `<prefix>/<name>/<version>/` with `release.json` written LAST (its presence means the version is
  complete), then the `<prefix>/<name>/latest.json` pointer, last of all. A version whose release.json
  exists is never written again: the same model again (same LoRA and exports; reports may differ in
  timings) is a no-op that only makes sure `latest.json` points at it (so a run that died between the
  two finishes); a different model under that version is refused.
  `latest.json` follows the last successful publish call.

Optionally the stage also uploads the release to a ModelScope model repo under `<version>/`
(`publish.modelscope_repo`), with the token from the environment variable MODELSCOPE_API_TOKEN only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from kolora_core.errors import KoloraError

RELEASE_MANIFEST = "release.json"
LATEST = "latest.json"
FORMAT = "kolora-release-v1"
LORA_FILES = ("lora.safetensors", "lora_diffusers.safetensors", "lora_kohya.safetensors", "train_summary.json")
REPORT_FILES = ("report.json", "report.html", "grid.png")
REQUIRED = ("lora.safetensors", "report.json", "report.html", "grid.png")
TOKEN_ENV = "MODELSCOPE_API_TOKEN"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# --- the stage: assemble ------------------------------------------------------------------------------------


def default_version(lora_sha256: str) -> str:
    """Same LoRA, same version: rerunning a pipeline never mints a second version of identical weights."""
    return f"lora-{lora_sha256[:12]}"


def read_gate(report_dir: Path) -> dict[str, Any]:
    path = report_dir / "report.json"
    if not path.is_file():
        raise KoloraError(f"{path} not found: pass the evaluate stage's report directory to --report")
    return json.loads(path.read_text(encoding="utf-8"))


def assemble_release(name: str, version: str | None, lora_dir: Path, report_dir: Path, out: Path) -> dict[str, Any]:
    """Fill `out` with the release and its release.json; refuses unless the evaluate gate passed."""
    report = read_gate(report_dir)
    gate = report.get("gate", {})
    if gate.get("result") != "passed":
        raise KoloraError(
            f"evaluate gate is '{gate.get('result', 'missing')}' ({gate.get('reason', 'no reason recorded')}): "
            "only a LoRA whose evaluation passed is published"
        )
    sources = [lora_dir / f for f in LORA_FILES] + [report_dir / f for f in REPORT_FILES]
    missing = [p for p in sources if p.name in REQUIRED and not p.is_file()]
    if missing:
        raise KoloraError(f"{missing[0]} is missing: a release needs {', '.join(REQUIRED)}")
    files = {}
    for source in sources:
        if source.is_file():
            shutil.copy2(source, out / source.name)
            files[source.name] = {"sha256": _sha256(out / source.name), "size": (out / source.name).stat().st_size}
    lora_sha = files["lora.safetensors"]["sha256"]
    settings, training = report.get("settings", {}), report.get("training", {})
    release = {
        "format": FORMAT,
        "name": name,
        "version": version or default_version(lora_sha),
        "lora_sha256": lora_sha,
        "lora": {k: training.get(k) for k in ("rank", "alpha", "scale")},
        "base_model": settings.get("base_model"),
        "base_model_sha256": settings.get("base_model_sha256"),
        "gate": {k: gate.get(k) for k in ("result", "reason", "mean_aesthetic", "min_aesthetic")},
        "files": files,
    }
    (out / RELEASE_MANIFEST).write_text(
        json.dumps(release, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    return release


# --- storage and the no-overwrite publish ------------------------------------------------------------------


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


@dataclass
class PublishResult:
    status: str  # "published" or "already-published"
    version_prefix: str
    latest_key: str
    uploaded: list[str] = field(default_factory=list)


def _model_identity(release: dict[str, Any]) -> dict[str, Any]:
    """What makes two releases the same model: the LoRA and its exports (a re-run's report may differ in timings)."""
    files = {k: v.get("sha256") for k, v in release.get("files", {}).items() if k in LORA_FILES and k != "train_summary.json"}
    return {"name": release.get("name"), "version": release.get("version"), "files": files}


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
        if _sha256(release_dir / rel) != facts["sha256"]:
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


# --- ModelScope ---------------------------------------------------------------------------------------------


def _without(secret: str, text: str) -> str:
    return " ".join(text.replace(secret, "***").split()) if secret else " ".join(text.split())


def upload_to_modelscope(release_dir: Path, repo_id: str, api: Any = None) -> str:
    """Upload the release under `<version>/` of a ModelScope model repo; returns what happened.

    The token comes only from the environment (never a flag, never logged, scrubbed from error messages).
    A version already in the repo is not uploaded again.
    """
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise KoloraError(f"publish.modelscope_repo is set but {TOKEN_ENV} is not: export the ModelScope access token")
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text(encoding="utf-8"))
    version = release["version"]
    try:
        if api is None:
            from modelscope.hub.api import HubApi

            api = HubApi()
        api.login(token)
        if api.repo_exists(repo_id, repo_type="model", token=token):
            listed = api.get_model_files(repo_id, recursive=True)
            paths = {str(f.get("Path") or f.get("path") or "") for f in listed or [] if isinstance(f, dict)}
            if f"{version}/{RELEASE_MANIFEST}" in paths:
                return f"{repo_id}: version {version} already uploaded, left as it is"
        else:
            api.create_repo(repo_id, token=token, visibility="private", exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(release_dir),
            path_in_repo=version,
            commit_message=f"kolora {release['name']} {version}",
            token=token,
        )
    except KoloraError:
        raise
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types; all mean "upload failed"
        raise KoloraError(
            f"upload to ModelScope repo {repo_id} failed: {type(exc).__name__}: {_without(token, str(exc))}"
        ) from None
    return f"{repo_id}: version {version} uploaded under {version}/"


# --- the stage ----------------------------------------------------------------------------------------------


def run_publish(config: Any, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """`publish` stage work: the release directory (and, if configured, the ModelScope upload)."""
    import logging

    log = logging.getLogger("kolora.publish")
    release = assemble_release(config.name, config.publish.version, inputs["lora"], inputs["report"], outputs["release"])
    log.info(
        "release %s %s assembled: %d files, LoRA %s, gate %s (mean aesthetic %s)",
        release["name"],
        release["version"],
        len(release["files"]),
        release["lora_sha256"][:12],
        release["gate"]["result"],
        release["gate"]["mean_aesthetic"],
    )
    if config.publish.modelscope_repo:
        log.info("%s", upload_to_modelscope(outputs["release"], config.publish.modelscope_repo))
