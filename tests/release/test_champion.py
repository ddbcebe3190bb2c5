"""`kolora champion` against a real S3 server: the promoted release's comparison files, committed; or "none"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolora_core.cli import main as kolora
from kolora_core.errors import KoloraError
from kolora_core.evaluation.champion import read_champion
from kolora_core.release.publish import LATEST, publish_release
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from tests.release.test_release import _release


def _champion(store: S3Store, monkeypatch: pytest.MonkeyPatch, out: Path, *args: str) -> int:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")
    endpoint = ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    return kolora(["champion", *endpoint, "--out", str(out), *args])


def _marker(out: Path) -> dict:
    return json.loads((out / COMPLETE_MARKER).read_text(encoding="utf-8"))


def test_no_release_yet_is_none_not_an_error(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _champion(store, monkeypatch, tmp_path / "champion", "--name", "kolora") == 0
    pointer = json.loads((tmp_path / "champion" / "champion.json").read_text())
    assert pointer["status"] == "none" and "models/kolora/latest.json" in pointer["reason"]
    assert _marker(tmp_path / "champion")["files"] == ["champion.json"] and _marker(tmp_path / "champion")["stage"] == "champion"
    assert read_champion(tmp_path / "champion") is None
    assert "kolora champion: no models/kolora/latest.json" in capsys.readouterr().out


def test_the_promoted_release_without_its_lora(store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish_release(S3StoreStorage(store), _release(tmp_path, "one", fill=0.0, version="v1"))
    publish_release(S3StoreStorage(store), _release(tmp_path, "two", fill=1.0, version="v2"))  # latest -> v2
    out = tmp_path / "champion"
    assert _champion(store, monkeypatch, out, "--profile", "smoke") == 0  # --name '' -> the config's name, kolora
    files = _marker(out)["files"]
    story = [f"images/{i:03d}.png" for i in range(8)] + ["images/generations.jsonl"]
    assert sorted(files) == sorted(["champion.json", "release.json", "report.json", "grid.png", *story])
    pointer = json.loads((out / "champion.json").read_text())
    release = json.loads((out / "release.json").read_text())
    assert (pointer["status"], pointer["version"], pointer["prefix"]) == ("found", "v2", "models/kolora/v2/")
    assert pointer["identity"] == release["identity"] and release["version"] == "v2"
    champion = read_champion(out)
    assert champion is not None and champion.version == "v2" and champion.grid.is_file()
    # a rerun (a retried pod) replaces the directory with the same committed content
    assert _champion(store, monkeypatch, out, "--name", "kolora") == 0 and sorted(_marker(out)["files"]) == sorted(files)


def test_a_tampered_or_hostile_bucket_is_refused(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = S3StoreStorage(store)
    publish_release(storage, _release(tmp_path, "one", version="v1"))
    storage.put("models/kolora/v1/images/003.png", b"not the image that was released")
    out = tmp_path / "champion"
    assert _champion(store, monkeypatch, out, "--name", "kolora") == KoloraError.exit_code
    err = capsys.readouterr().err.strip()
    reset = f"`kolora champion --reset --name kolora --s3-endpoint {store.settings.endpoint_url} --bucket {store.bucket}`"
    assert err == (
        "kolora champion: error: the champion kolora v1 is damaged: models/kolora/v1/images/003.png does not match its "
        "sha256 in release.json: the release was changed after it was published. A damaged champion is neither compared "
        f"with nor promoted over (published versions are never rewritten). To clear models/kolora/latest.json, so that "
        f"the next run has no champion: {reset}"
    )
    assert not (out / COMPLETE_MARKER).exists(), "nothing is committed"
    for pointer, message in (
        ({"name": "kolora", "version": "../v1"}, "models/kolora/latest.json names version '../v1', which is not a plain"),
        ({"name": "other", "version": "v1"}, "models/kolora/latest.json names model 'other', not 'kolora'"),
        ({"name": "kolora", "version": "v9"}, "models/kolora/v9/release.json is missing: the version was never completely"),
        (["v1"], "models/kolora/latest.json does not hold a JSON object"),
    ):
        storage.put(f"models/kolora/{LATEST}", json.dumps(pointer).encode())
        assert _champion(store, monkeypatch, out, "--name", "kolora") == KoloraError.exit_code
        err = capsys.readouterr().err
        assert message in err and reset in err and "\n" not in err.strip()
        assert "To point models/kolora/latest.json back at an intact version: `kolora publish --rollback v1 --name kolora" in err
