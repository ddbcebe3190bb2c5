"""Publishing: a release only behind a passed gate; published versions never overwritten; latest.json written last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.publish import main as publish_main
from kolora_core.errors import KoloraError
from kolora_core.lora.format import save_lora
from kolora_core.release.assemble import RELEASE_MANIFEST, assemble_release
from kolora_core.release.modelscope import upload_to_modelscope
from kolora_core.release.publish import LATEST, publish_release
from kolora_core.storage.objects import LocalStorage, S3StoreStorage
from tests.conftest import mark_complete


def _lora_dir(root: Path, fill: float = 0.0, exports: bool = True) -> Path:
    root.mkdir(parents=True)
    save_lora(root / "lora.safetensors", {"m.lora_A.default.weight": torch.full((16, 4), fill)}, rank=16, alpha=4.0, extra={})
    (root / "train_summary.json").write_text(json.dumps({"steps": 4}))
    if exports:
        (root / "lora_diffusers.safetensors").write_bytes(b"diffusers" + bytes([int(fill)]))
        (root / "lora_kohya.safetensors").write_bytes(b"kohya" + bytes([int(fill)]))
    return mark_complete(root)


def _report_dir(root: Path, result: str = "passed") -> Path:
    root.mkdir(parents=True)
    gate = {"result": result, "reason": f"gate {result} for the test", "mean_aesthetic": 6.5, "min_aesthetic": 6.0}
    report = {"gate": gate, "settings": {"base_model": "tiny", "base_model_sha256": "b" * 64}, "training": {"rank": 16}}
    (root / "report.json").write_text(json.dumps(report))
    (root / "report.html").write_text("<html>report</html>")
    Image.new("RGB", (8, 16), (1, 2, 3)).save(root / "grid.png")
    (root / "gate.txt").write_text(result + "\n")
    return mark_complete(root)


def _release(tmp_path: Path, name: str = "rel", fill: float = 0.0, version: str | None = None, lora: Path | None = None) -> Path:
    out = tmp_path / name
    out.mkdir()
    lora = lora or _lora_dir(tmp_path / f"{name}-lora", fill)
    assemble_release("kolora", version, lora, _report_dir(tmp_path / f"{name}-report"), out)
    return out


def _stage(tmp_path: Path, lora: Path, report: Path, *extra: str) -> int:
    return publish_main(
        ["--profile", "smoke", "--lora", str(lora), "--report", str(report), "--release", str(tmp_path / "release"), *extra]
    )


def test_stage_assembles_the_release_behind_a_passed_gate(tmp_path: Path) -> None:
    assert _stage(tmp_path, _lora_dir(tmp_path / "lora"), _report_dir(tmp_path / "report")) == 0
    release_dir = tmp_path / "release"
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    expected = {
        "lora.safetensors",
        "lora_diffusers.safetensors",
        "lora_kohya.safetensors",
        "train_summary.json",
        "report.json",
        "report.html",
        "grid.png",
    }
    assert set(release["files"]) == expected
    assert {p.name for p in release_dir.iterdir()} == expected | {RELEASE_MANIFEST, "_SUCCESS"}
    assert release["version"] == "lora-" + release["lora_sha256"][:12] and release["name"] == "kolora"
    assert release["gate"]["result"] == "passed" and release["base_model"] == "tiny"
    assert (
        _stage(tmp_path, _lora_dir(tmp_path / "lora2", exports=False), _report_dir(tmp_path / "r2"), "--publish.version", "v1")
        == 0
    )
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    assert release["version"] == "v1" and "lora_kohya.safetensors" not in release["files"]  # exports only where present


@pytest.mark.parametrize("result", ["failed", "skipped"])
def test_stage_refuses_unless_passed(tmp_path: Path, result: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _stage(tmp_path, _lora_dir(tmp_path / "lora"), _report_dir(tmp_path / "report", result)) == 2
    err = capsys.readouterr().err
    assert f"evaluate gate is '{result}' (gate {result} for the test): only a LoRA whose evaluation passed is published" in err
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


class RecordingStorage(LocalStorage):
    def __init__(self, root: Path, fail_on: str | None = None) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.fail_on = fail_on

    def put(self, key: str, data: bytes | Path) -> None:
        if self.fail_on and key.endswith(self.fail_on):
            raise OSError("connection reset")
        self.puts.append(key)
        super().put(key, data)


def test_publish_writes_release_json_then_latest_last_and_is_idempotent(tmp_path: Path) -> None:
    release_dir = _release(tmp_path)
    version = json.loads((release_dir / RELEASE_MANIFEST).read_text())["version"]
    storage = RecordingStorage(tmp_path / "bucket")
    first = publish_release(storage, release_dir)
    assert first.status == "published" and first.version_prefix == f"models/kolora/{version}/"
    assert storage.puts[-2:] == [f"models/kolora/{version}/{RELEASE_MANIFEST}", f"models/kolora/{LATEST}"]
    assert len(storage.list(first.version_prefix)) == 8
    latest = json.loads(storage.get(f"models/kolora/{LATEST}"))
    assert latest == {"name": "kolora", "version": version, "prefix": first.version_prefix, "lora_sha256": latest["lora_sha256"]}
    storage.puts.clear()
    again = publish_release(storage, release_dir)
    assert (again.status, again.uploaded, storage.puts) == ("already-published", [], [])


def test_a_published_version_is_never_overwritten(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    lora = _lora_dir(tmp_path / "lora", fill=0.0)
    publish_release(storage, _release(tmp_path, "one", version="v1", lora=lora))
    before = {k: storage.get(k) for k in storage.list("models/")}
    with pytest.raises(KoloraError, match=r"kolora version v1 is already published .* never overwritten"):
        publish_release(storage, _release(tmp_path, "two", fill=1.0, version="v1"))
    assert {k: storage.get(k) for k in storage.list("models/")} == before
    # A new version moves latest.json; republishing v1 afterwards is a no-op for v1 and points latest back (last call wins).
    publish_release(storage, _release(tmp_path, "three", fill=1.0, version="v2"))
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v2"
    # Same LoRA file, freshly evaluated (a report may differ in timings): the same model, so nothing is written to v1.
    assert publish_release(storage, _release(tmp_path, "four", version="v1", lora=lora)).status == "already-published"
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v1"


def test_a_crash_before_release_json_leaves_an_unpublished_version_that_a_retry_completes(tmp_path: Path) -> None:
    release_dir = _release(tmp_path, version="v1")
    broken = RecordingStorage(tmp_path / "bucket", fail_on=RELEASE_MANIFEST)
    with pytest.raises(OSError, match="connection reset"):
        publish_release(broken, release_dir)
    assert not broken.exists(f"models/kolora/v1/{RELEASE_MANIFEST}") and not broken.exists(f"models/kolora/{LATEST}")
    retry = publish_release(LocalStorage(tmp_path / "bucket"), release_dir)
    assert retry.status == "published" and retry.uploaded[-1] == f"models/kolora/{LATEST}"


def test_a_changed_release_dir_is_refused(tmp_path: Path) -> None:
    release_dir = _release(tmp_path)
    (release_dir / "report.html").write_text("edited")
    with pytest.raises(KoloraError, match=r"report.html does not match its sha256"):
        publish_release(LocalStorage(tmp_path / "bucket"), release_dir)


def test_s3_adapter_against_the_embedded_store(tmp_path: Path) -> None:
    from kolora_core.storage.embedded import EmbeddedS3
    from kolora_core.storage.s3 import S3Store

    with EmbeddedS3() as settings:
        store = S3Store(settings)
        store.ensure_bucket()
        storage = S3StoreStorage(store)
        release_dir = _release(tmp_path, version="v1")
        assert publish_release(storage, release_dir).status == "published"
        assert publish_release(storage, release_dir).status == "already-published"
        assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v1"
        assert len(storage.list("models/kolora/v1/")) == 8


class FakeHubApi:
    def __init__(self, existing: list[str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.existing = existing

    def login(self, token: str) -> None:
        self.calls.append(("login", {"token": token}))

    def repo_exists(self, repo_id: str, **kwargs: object) -> bool:
        return self.existing is not None

    def get_model_files(self, repo_id: str, **kwargs: object) -> list[dict[str, str]]:
        return [{"Path": p} for p in self.existing or []]

    def create_repo(self, repo_id: str, **kwargs: object) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs: object) -> None:
        if kwargs.get("repo_id") == "me/broken":
            raise RuntimeError(f"401 for token {kwargs.get('token')}")
        self.calls.append(("upload_folder", kwargs))


def test_modelscope_upload_takes_the_token_from_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release_dir = _release(tmp_path, version="v3")
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    with pytest.raises(KoloraError, match="MODELSCOPE_API_TOKEN is not"):
        upload_to_modelscope(release_dir, "me/kolora", api=FakeHubApi())
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret-123")
    api = FakeHubApi()
    assert upload_to_modelscope(release_dir, "me/kolora", api=api) == "me/kolora: version v3 uploaded under v3/"
    upload = dict(api.calls)["upload_folder"]
    assert (upload["repo_id"], upload["folder_path"], upload["path_in_repo"]) == ("me/kolora", str(release_dir), "v3")
    assert api.calls[0] == ("login", {"token": "ms-secret-123"}) and api.calls[1][0] == "create_repo"
    skipped = FakeHubApi(existing=[f"v3/{RELEASE_MANIFEST}"])
    assert "already uploaded" in upload_to_modelscope(release_dir, "me/kolora", api=skipped)
    assert [c[0] for c in skipped.calls] == ["login"]
    with pytest.raises(KoloraError) as caught:
        upload_to_modelscope(release_dir, "me/broken", api=FakeHubApi())
    assert "ms-secret-123" not in str(caught.value) and "401 for token ***" in str(caught.value)


def test_stage_uploads_to_modelscope_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    api = FakeHubApi()
    # modelscope's lazy top-level module refuses attribute access here; patch the real submodule object.
    monkeypatch.setattr(importlib.import_module("modelscope.hub.api"), "HubApi", lambda: api)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret-123")
    lora, report = _lora_dir(tmp_path / "lora"), _report_dir(tmp_path / "report")
    assert _stage(tmp_path, lora, report, "--publish.modelscope_repo", "me/kolora") == 0
    assert dict(api.calls)["upload_folder"]["path_in_repo"].startswith("lora-")
