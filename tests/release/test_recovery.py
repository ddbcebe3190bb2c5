"""The way out of a damaged champion: rollback and reset of latest.json, never racing a promotion, never deleting.

Most cases run on `LocalStorage` (the same `Storage` semantics, fast); the races and the CLI also run against the
real S3 server, whose `If-Match` is what makes a move refusable there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolora_core.cli import main as kolora
from kolora_core.errors import KoloraError
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.champion import fetch_champion
from kolora_core.release.intact import DamagedRelease
from kolora_core.release.pointer import LATEST, reset, rollback
from kolora_core.release.publish import publish_release
from kolora_core.release.recovery import champion_advice
from kolora_core.storage.objects import LocalStorage, S3StoreStorage, Storage
from kolora_core.storage.s3 import S3Store
from tests.release.test_publish_race import _evaluated_against
from tests.release.test_release import _release

LATEST_KEY = f"models/kolora/{LATEST}"


def _published(storage: Storage, tmp_path: Path, *versions: str) -> dict[str, Path]:
    """Each version published in order (latest.json -> the last); their release directories."""
    dirs = {}
    for i, version in enumerate(versions):
        dirs[version] = _release(tmp_path, f"rel-{version}", fill=float(i), version=version)
        publish_release(storage, dirs[version])
    return dirs


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every object of a LocalStorage (not its own lock files)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".lock"
    }


def _latest(storage: Storage) -> dict:
    return json.loads(storage.get(LATEST_KEY))


def test_rollback_points_latest_at_an_intact_earlier_version_and_deletes_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    _published(storage, tmp_path, "v1", "v2")
    storage.put("models/kolora/v2/images/003.png", b"tampered")
    before = _snapshot(tmp_path / "bucket")
    line = rollback(storage, "models", "kolora", "v1")
    assert line == f"{LATEST_KEY}: v2 -> v1 (every file of models/kolora/v1/ checked; nothing deleted)"
    after = _snapshot(tmp_path / "bucket")
    assert {k for k in after if after[k] != before.get(k)} == {LATEST_KEY} and set(after) == set(before)
    pointer_of_v1 = _latest(storage)
    release = json.loads(storage.get(f"models/kolora/v1/{RELEASE_MANIFEST}"))
    assert pointer_of_v1 == {
        "name": "kolora",
        "version": "v1",
        "prefix": "models/kolora/v1/",
        "lora_sha256": release["lora_sha256"],
        "identity": release["identity"],
    }
    assert rollback(storage, "models", "kolora", "v1") == f"{LATEST_KEY} already points at kolora v1 (every file checked)"
    assert fetch_champion(storage, "models", "kolora", tmp_path / "champion")["version"] == "v1"


def test_rollback_refuses_a_version_that_does_not_exist_or_is_damaged(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    _published(storage, tmp_path, "v1", "v2", "v3", "v4")
    storage.put("models/kolora/v2/images/003.png", b"tampered")
    storage.put("models/kolora/v3/lora.safetensors", b"tampered")  # the LoRA too: what users download
    (tmp_path / "bucket" / "models/kolora/v4" / RELEASE_MANIFEST).unlink()
    latest = storage.get(LATEST_KEY)
    for version, message in (
        ("v9", "kolora has no version v9 under models/kolora/ (published: v1, v2, v3): give a published version"),
        ("../v1", "--rollback '../v1' is not a version name"),
        ("latest", "--rollback 'latest' is not a version name"),
        ("v2", "kolora v2 is damaged, so latest.json is not pointed at it: models/kolora/v2/images/003.png does not match"),
        ("v3", "kolora v3 is damaged, so latest.json is not pointed at it: models/kolora/v3/lora.safetensors does not match"),
        ("v4", "kolora v4 is damaged, so latest.json is not pointed at it: models/kolora/v4/release.json is missing"),
    ):
        with pytest.raises(KoloraError) as refused:
            rollback(storage, "models", "kolora", version)
        assert message in str(refused.value), version
        assert storage.get(LATEST_KEY) == latest, f"{version}: latest.json was written"
    with pytest.raises(KoloraError) as refused:
        rollback(storage, "models", "kolora", "v2")
    assert "choose another version (v1, v3) or clear latest.json with `kolora champion --reset`" in str(refused.value)


class Interloper(LocalStorage):
    """A promotion that moves latest.json between the move's read and its conditional write."""

    def __init__(self, root: Path, body: bytes) -> None:
        super().__init__(root)
        self.body = body

    def _first(self, key: str) -> None:
        if key == LATEST_KEY and self.body:
            self.put(key, self.body)
            self.body = b""

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        self._first(key)
        return super().put_if_match(key, data, etag)

    def put_if_absent(self, key: str, data: bytes) -> str:
        self._first(key)
        return super().put_if_absent(key, data)


def _pointer(version: str) -> bytes:
    return json.dumps({"name": "kolora", "version": version}).encode()


@pytest.mark.parametrize("had_latest", [True, False])
def test_a_move_is_refused_when_latest_changed_between_read_and_write(tmp_path: Path, had_latest: bool) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    _published(storage, tmp_path, "v1", "v2")
    if not had_latest:
        (tmp_path / "bucket" / LATEST_KEY).unlink()
    raced = Interloper(tmp_path / "bucket", _pointer("v3"))
    with pytest.raises(KoloraError) as refused:
        rollback(raced, "models", "kolora", "v1")
    assert str(refused.value) == (
        f"{LATEST_KEY} changed while the rollback to v1 was being checked (it points at v3 now): another promotion or "
        "person moved it first; nothing was written: look at the new state and run it again if it is still wanted"
    )
    assert storage.get(LATEST_KEY) == _pointer("v3")
    if had_latest:
        with pytest.raises(KoloraError, match=r"changed while the reset was being checked \(it points at v4 now\)"):
            reset(Interloper(tmp_path / "bucket", _pointer("v4")), "models", "kolora")
        assert storage.get(LATEST_KEY) == _pointer("v4")


def test_a_move_on_s3_is_refused_when_latest_changed_between_read_and_write(store: S3Store, tmp_path: Path) -> None:
    """The same race on the real server: its If-Match refuses the stale write."""

    class Racing(S3StoreStorage):
        def __init__(self, body: bytes) -> None:
            super().__init__(store)
            self.body = body

        def put_if_match(self, key: str, data: bytes, etag: str) -> str:
            if key == LATEST_KEY and self.body:
                self.put(key, self.body)
                self.body = b""
            return super().put_if_match(key, data, etag)

    _published(S3StoreStorage(store), tmp_path, "v1", "v2")
    with pytest.raises(KoloraError, match=r"changed while the rollback to v1 was being checked \(it points at v3 now\)"):
        rollback(Racing(_pointer("v3")), "models", "kolora", "v1")
    with pytest.raises(KoloraError, match=r"changed while the reset was being checked \(it points at v4 now\)"):
        reset(Racing(_pointer("v4")), "models", "kolora")
    assert S3StoreStorage(store).get(LATEST_KEY) == _pointer("v4")


def test_reset_clears_latest_and_the_next_promotion_starts_from_no_champion(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    assert reset(storage, "models", "kolora") == f"no {LATEST_KEY}: kolora has no champion, nothing to clear"
    assert not storage.exists(LATEST_KEY)
    _published(storage, tmp_path, "v1")
    before = _snapshot(tmp_path / "bucket")
    assert reset(storage, "models", "kolora") == (
        f"cleared {LATEST_KEY} (it pointed at v1): the next run of kolora has no champion; every published version is kept"
    )
    assert _latest(storage) == {"name": "kolora", "version": None, "cleared_from": "v1"}
    assert set(_snapshot(tmp_path / "bucket")) == set(before)
    assert reset(storage, "models", "kolora") == f"{LATEST_KEY} is cleared already: kolora has no champion"
    champion = fetch_champion(storage, "models", "kolora", tmp_path / "champion")
    assert champion["status"] == "none" and "was cleared (kolora champion --reset; it pointed at v1)" in champion["reason"]

    # a release evaluated against v1 was evaluated against what is no longer the champion: refused
    stale = _evaluated_against(_release(tmp_path, "stale", fill=5.0, version="v5"), {"status": "found", "version": "v1"})
    with pytest.raises(KoloraError, match="points at no release, but kolora v5 was evaluated against v1"):
        publish_release(storage, stale)
    # one evaluated against no champion (what the next run sees) becomes the latest
    fresh = _evaluated_against(_release(tmp_path, "fresh", fill=6.0, version="v6"), {"status": "none"})
    publish_release(storage, fresh)
    assert _latest(storage)["version"] == "v6"
    assert rollback(storage, "models", "kolora", "v1").startswith(f"{LATEST_KEY}: v6 -> v1")


def test_a_damaged_published_version_is_never_made_the_latest_again(tmp_path: Path) -> None:
    """The same LoRA again (a rerun after a rollback or a reset) finds its version published but damaged: refused,
    or latest.json would point at the damage again and the next champion step would fail as before."""
    storage = LocalStorage(tmp_path / "bucket")
    dirs = _published(storage, tmp_path, "v1", "v2")
    storage.put("models/kolora/v2/images/003.png", b"tampered")
    rollback(storage, "models", "kolora", "v1")
    with pytest.raises(KoloraError) as refused:
        publish_release(storage, dirs["v2"])
    assert str(refused.value).startswith(
        "kolora version v2 is published at models/kolora/v2/ but damaged (models/kolora/v2/images/003.png does not match"
    )
    assert str(refused.value).endswith(
        "a damaged one is never made the latest: publish this LoRA under a new version "
        "(publish.version; for a workflow run `-p config='publish: {version: v2-2}'`)"
    )
    assert _latest(storage)["version"] == "v1"
    assert publish_release(storage, dirs["v1"]).status == "already-published"  # an intact one still is


def _damaged(storage: Storage, prefix: str, out: Path) -> DamagedRelease:
    """What the champion step finds."""
    with pytest.raises(DamagedRelease) as damaged:
        fetch_champion(storage, prefix, "kolora", out)
    return damaged.value


def test_the_advice_names_the_version_the_damaged_one_replaced(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    _published(storage, tmp_path, "v1", "v2")
    three = _evaluated_against(_release(tmp_path, "v3", fill=3.0, version="v3"), {"status": "found", "version": "v2"})
    publish_release(storage, three)
    storage.put("models/kolora/v3/grid.png", b"tampered")
    damaged = _damaged(storage, "models", tmp_path / "champion")
    advice = champion_advice(storage, "models", "kolora", damaged, ["--runs-dir", "my runs"])
    assert advice.startswith("the champion kolora v3 is damaged: models/kolora/v3/grid.png does not match its sha256")
    assert (
        "To point models/kolora/latest.json back at an intact version: "
        "`kolora publish --rollback v2 --name kolora --runs-dir 'my runs'`; or to clear models/kolora/latest.json, so that "
        "the next run has no champion: `kolora champion --reset --name kolora --runs-dir 'my runs'`"
    ) in advice


def test_without_a_record_of_the_replaced_version_the_user_picks(tmp_path: Path) -> None:
    """Two other versions and no gate record: VERSION and the list; the cluster's flags, quoted for a shell."""
    storage = LocalStorage(tmp_path / "bucket")
    for i, version in enumerate(("v1", "v2", "v3")):
        publish_release(storage, _release(tmp_path, version, fill=float(i), version=version), "team/models")
    storage.put("team/models/kolora/v3/grid.png", b"tampered")
    cluster = ["--s3-endpoint", "", "--bucket", "team", "--region", "eu-west-1"]
    advice = champion_advice(storage, "team/models", "kolora", _damaged(storage, "team/models", tmp_path / "c"), cluster)
    assert (
        "`kolora publish --rollback VERSION --name kolora --prefix team/models --s3-endpoint '' --bucket team "
        "--region eu-west-1` (VERSION: one of v1, v2; the rollback checks every file first)"
    ) in advice


def test_the_advice_for_an_unfinished_version_offers_completing_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    _published(storage, tmp_path, "v1")
    (tmp_path / "bucket" / "models/kolora/v1" / RELEASE_MANIFEST).unlink()
    damaged = _damaged(storage, "models", tmp_path / "champion")
    advice = champion_advice(storage, "models", "kolora", damaged, ["--runs-dir", "runs"])
    assert advice.startswith("the champion kolora v1 is damaged: models/kolora/v1/release.json is missing: the version")
    assert "kolora publish --rollback" not in advice  # no other version to go back to
    assert (
        "To complete v1 from the release folder DIR of the run that published it (locally "
        "runs/<run-id>/publish/release): `kolora publish --release DIR --runs-dir runs`; or to clear "
        "models/kolora/latest.json, so that the next run has no champion: "
        "`kolora champion --reset --name kolora --runs-dir runs`"
    ) in advice


@pytest.fixture
def endpoint(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The release commands' flags for the test S3 server, its keys in the environment as the commands read them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.settings.access_key_id or "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.settings.secret_access_key or "")
    return ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]


def test_the_cli_rolls_back_and_resets_on_s3(
    store: S3Store, endpoint: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = S3StoreStorage(store)
    _published(storage, tmp_path, "v1", "v2")
    assert kolora(["publish", "--rollback", "v1", "--name", "kolora", *endpoint]) == 0
    moved = f"kolora publish: {LATEST_KEY}: v2 -> v1 (every file of models/kolora/v1/ checked; nothing deleted)"
    assert capsys.readouterr().out.strip() == moved
    assert json.loads(storage.get(LATEST_KEY))["version"] == "v1"
    assert kolora(["champion", "--reset", "--name", "kolora", *endpoint]) == 0
    assert "kolora champion: cleared models/kolora/latest.json (it pointed at v1)" in capsys.readouterr().out
    assert kolora(["champion", "--name", "kolora", "--out", str(tmp_path / "champion"), *endpoint]) == 0
    assert json.loads((tmp_path / "champion" / "champion.json").read_text())["status"] == "none"

    for argv, message in (
        (["publish", "--rollback", "v1", *endpoint], "--rollback needs --name"),
        (["publish", "--rollback", "v1", "--name", "Not/A/Name", *endpoint], "kolora publish: error: --name: config field"),
        (["champion", "--reset", "--name", "Not/A/Name", *endpoint], "kolora champion: error: --name: config field 'name'"),
        (["publish", "--release", str(tmp_path / "rel-v1"), "--name", "kolora", *endpoint], "--name is for --rollback"),
    ):
        assert kolora(argv) == KoloraError.exit_code, argv
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # where the releases are is never guessed: one of the two flags
        kolora(["champion", "--reset", "--name", "kolora"])
    assert "one of the arguments --s3-endpoint --runs-dir is required" in capsys.readouterr().err


def test_the_release_commands_never_make_an_embedded_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --runs-dir found "nothing to clear" in a new, empty store it had just made: refused, nothing made."""
    typo = tmp_path / "runz"
    for argv in (["champion", "--reset", "--name", "kolora"], ["publish", "--rollback", "v1", "--name", "kolora"]):
        assert kolora([*argv, "--runs-dir", str(typo)]) == KoloraError.exit_code, argv
        assert f"--runs-dir {typo}: no embedded store there" in capsys.readouterr().err
    assert not typo.exists()


def test_a_damaged_rollback_target_advises_the_reset_with_this_store(
    store: S3Store, endpoint: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = S3StoreStorage(store)
    _published(storage, tmp_path, "r1", "r2")
    storage.put("models/kolora/r1/grid.png", b"tampered")
    assert kolora(["publish", "--rollback", "r1", "--name", "kolora", *endpoint]) == KoloraError.exit_code
    reset = f"`kolora champion --reset --name kolora --s3-endpoint {store.settings.endpoint_url} --bucket {store.bucket}`"
    assert f"clear latest.json with {reset}" in capsys.readouterr().err
