"""Promotion: `kolora publish` against a real S3 server, and the promote step run by the local runner like any step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kolora_core.cli import main as kolora
from kolora_core.errors import KoloraError, TransientError
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.publish import LATEST
from kolora_core.runner.local import failure_report
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from tests.release.test_release import _release
from tests.storage.test_s3 import closed_port


def _cli(store: S3Store, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")
    endpoint = ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    return kolora(["publish", *args, *endpoint])


def test_kolora_publish_publishes_and_never_overwrites_a_version(
    tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _release(tmp_path, "a", fill=0.0, version="v1")
    assert _cli(store, monkeypatch, "--release", str(first)) == 0
    out = capsys.readouterr().out
    assert f"published s3://{store.bucket}/models/kolora/v1/" in out
    assert store.exists(f"models/kolora/v1/{RELEASE_MANIFEST}") and store.exists(f"models/kolora/{LATEST}")
    before = sorted(store.list_keys("models/"))

    assert _cli(store, monkeypatch, "--release", str(first)) == 0  # the same LoRA again: accepted, nothing written
    assert "already published" in (out := capsys.readouterr().out) and "with the same LoRA; latest.json unchanged" in out

    other = _release(tmp_path, "b", fill=1.0, version="v1")
    assert _cli(store, monkeypatch, "--release", str(other)) == KoloraError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("kolora publish: error: kolora version v1 is already published") and "\n" not in err
    assert sorted(store.list_keys("models/")) == before
    assert json.loads(S3StoreStorage(store).get(f"models/kolora/{LATEST}"))["version"] == "v1"


def test_republishing_says_when_latest_json_moves_back_to_the_version(
    tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a reset, the same LoRA promoted again makes its version the champion again: the line says latest moved."""
    release = _release(tmp_path, "a", fill=0.0, version="v1")
    assert _cli(store, monkeypatch, "--release", str(release)) == 0
    endpoint = ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    assert kolora(["champion", "--reset", "--name", "kolora", *endpoint]) == 0
    capsys.readouterr()
    assert _cli(store, monkeypatch, "--release", str(release)) == 0
    assert "already published" in (out := capsys.readouterr().out) and "with the same LoRA; latest.json moved to it" in out
    assert json.loads(S3StoreStorage(store).get(f"models/kolora/{LATEST}"))["version"] == "v1"


def test_kolora_publish_from_a_run_release_key(
    tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store.upload(_release(tmp_path, "a", version="v2"), "kolora-run-abc/release", archive=False)
    assert _cli(store, monkeypatch, "--run-release", "kolora-run-abc/release", "--prefix", "team/models") == 0
    assert store.exists(f"team/models/kolora/v2/{RELEASE_MANIFEST}")
    assert _cli(store, monkeypatch, "--run-release", "kolora-run-abc/nothing") == KoloraError.exit_code
    assert "kolora publish: error:" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["models/", "/models", "a//b", "a/../b", "./models", ""])
@pytest.mark.parametrize(
    "command",
    [
        ["publish", "--release", "REL"],
        ["publish", "--rollback", "v1", "--name", "kolora"],
        ["champion", "--name", "kolora", "--out", "OUT"],
        ["champion", "--reset", "--name", "kolora"],
    ],
)
def test_a_prefix_the_config_refuses_is_refused_by_the_release_commands_before_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], prefix: str
) -> None:
    """`publish.prefix` and `-p publish-prefix` refuse `models/` and `a//b`; --prefix stripped the '/' (`models/` named
    the releases of `models`), or made keys with an empty or '..' part, after contacting the store."""
    argv = [str(tmp_path / "rel") if word == "REL" else str(tmp_path / "out") if word == "OUT" else word for word in command]
    (tmp_path / "rel").mkdir()
    url = f"http://127.0.0.1:{closed_port()}"
    code = kolora([*argv, "--prefix", prefix, "--s3-endpoint", url])
    err = capsys.readouterr().err.strip()
    assert code == KoloraError.exit_code and "\n" not in err, err
    assert err.startswith(f"kolora {command[0]}: error: --prefix {prefix!r}: give the key prefix of the releases"), err
    assert "no empty, '.' or '..' parts" in err and not (tmp_path / "out").exists()


def test_a_prefix_with_a_trailing_slash_publishes_nothing(
    tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It published into `models/`, the releases of the prefix `models`, which the config's publish.prefix refuses."""
    assert _cli(store, monkeypatch, "--release", str(_release(tmp_path, "a", version="v1")), "--prefix", "models/") == 2
    assert "kolora publish: error: --prefix 'models/': give the key prefix" in capsys.readouterr().err
    assert store.list_keys("") == []


def test_kolora_publish_names_a_missing_release_before_contacting_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to report the dead endpoint first, and to advise leaving out --s3-endpoint, which publish requires."""
    code = kolora(["publish", "--release", str(tmp_path / "nodir"), "--s3-endpoint", f"http://127.0.0.1:{closed_port()}"])
    err = capsys.readouterr().err.strip()
    assert code == KoloraError.exit_code and "\n" not in err
    assert err.startswith(f"kolora publish: error: --release {tmp_path / 'nodir'} is not a directory")


def test_kolora_publish_to_a_dead_endpoint_advises_what_publish_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 75, not 2: publish is the workflow's promote step, and a store that refuses connections may be restarting."""
    url = f"http://127.0.0.1:{closed_port()}"
    code = kolora(["publish", "--release", str(_release(tmp_path, "a")), "--s3-endpoint", url])
    err = capsys.readouterr().err.strip()
    assert code == TransientError.exit_code and "\n" not in err
    assert err.startswith(f"kolora publish: error: S3 endpoint {url} does not answer")
    assert err.endswith("start the server or fix --s3-endpoint") and "embedded store" not in err


def test_promote_is_an_ordinary_step_against_the_runs_store(run: Any, store: S3Store) -> None:
    result, console = run("promote.yaml")
    assert result.ok, console
    assert [n.phase for n in result.nodes] == ["Succeeded"] * 3
    # kolora run pointed s3-endpoint/s3-bucket/s3-region at its store and filled the store Secret with its keys
    assert result.parameters["s3-bucket"] == store.bucket and result.parameters["s3-endpoint"] == store.settings.endpoint_url
    assert "s3-bucket" not in result.changed  # the store's own values, not the user's choices
    assert store.exists(f"models/kolora/v1/{RELEASE_MANIFEST}") and store.exists(f"models/kolora/{LATEST}")
    assert f"[promote] kolora publish: published s3://{store.bucket}/models/kolora/v1/" in console
    assert f"promoted published s3://{store.bucket}/models/kolora/v1/" in result.summary
    assert store.settings.secret_access_key not in console + (result.run_dir / "logs" / "promote.log").read_text()


def test_an_explicit_parameter_wins_over_the_store(run: Any, store: S3Store) -> None:
    other = f"{store.bucket}-other"
    result, console = run("promote.yaml", parameters={"s3-bucket": other})
    assert result.ok, console
    assert f"published s3://{other}/models/kolora/v1/" in console and store.list_keys("models/") == []


def test_nothing_is_promoted_when_the_gate_did_not_pass(run: Any, store: S3Store) -> None:
    result, console = run("promote.yaml", parameters={"gate": "failed"})
    assert result.ok, console
    assert result.node("publish").phase == "Skipped" and result.node("promote").phase == "Omitted"
    assert store.list_keys("models/") == [] and "\npromoted " not in result.summary


def test_a_refused_promotion_fails_the_promote_step(run: Any, store: S3Store) -> None:
    assert run("promote.yaml", parameters={"publish-prefix": "rel"})[0].ok
    result, _ = run("promote.yaml", parameters={"publish-prefix": "rel", "lora": "weights-b"})
    assert not result.ok and result.failed is not None and result.failed.node == "promote" and result.failed.exit_code == 2
    assert "kolora publish: error: kolora version v1 is already published" in failure_report(result)
