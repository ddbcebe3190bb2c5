"""S3 storage: Argo's artifact layout over the real S3 protocol, and errors a developer can act on."""

from __future__ import annotations

import io
import socket
import tarfile
import time
from pathlib import Path

import pytest

from kolora_core.errors import KoloraError
from kolora_core.storage.archive import is_targz, pack_targz, unpack_targz
from kolora_core.storage.embedded import EmbeddedS3
from kolora_core.storage.s3 import ArtifactNotFound, S3Settings, S3Store


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (root / "sub" / "deeper" / "c.txt").write_text("gamma")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_directory_round_trip_one_object_per_file(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    keys = store.upload(src, "run-1/step/data", archive=False)
    assert sorted(keys) == ["run-1/step/data/a.txt", "run-1/step/data/sub/b.bin", "run-1/step/data/sub/deeper/c.txt"]
    assert sorted(store.list_keys("run-1/")) == sorted(keys)
    assert store.download("run-1/step/data", tmp_path / "out") == "dir"
    assert tree(tmp_path / "out") == tree(src)


def test_directory_archive_round_trip_is_one_tgz_object(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    assert store.upload(src, "run-1/step/data.tgz", archive=True) == ["run-1/step/data.tgz"]
    assert store.list_keys("run-1/") == ["run-1/step/data.tgz"]
    store.download_file("run-1/step/data.tgz", tmp_path / "raw.tgz")
    assert is_targz(tmp_path / "raw.tgz")
    # Argo's layout: the single top-level entry is the source's base name, and it becomes the input path
    with tarfile.open(tmp_path / "raw.tgz") as tar:
        assert {m.name.split("/")[0] for m in tar.getmembers()} == {"src"}
    assert store.download("run-1/step/data.tgz", tmp_path / "elsewhere" / "input") == "dir"
    assert tree(tmp_path / "elsewhere" / "input") == tree(src)


def test_single_file_round_trips_archived_and_plain(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "gate.txt"
    src.write_text("passed\n")
    store.upload(src, "r/n/gate.tgz", archive=True)
    store.upload(src, "r/n/gate", archive=False)
    assert store.download("r/n/gate.tgz", tmp_path / "one") == "file"
    assert store.download("r/n/gate", tmp_path / "two") == "file"
    assert (tmp_path / "one").read_text() == (tmp_path / "two").read_text() == "passed\n"


def test_download_replaces_what_was_there_and_missing_keys_say_so(store: S3Store, tmp_path: Path) -> None:
    store.upload(make_tree(tmp_path / "src"), "r/x", archive=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    store.download("r/x", dest)
    assert not (dest / "stale.txt").exists()
    with pytest.raises(ArtifactNotFound, match="r/nothing"):
        store.download("r/nothing", tmp_path / "none")
    # a key that is only a string prefix of another key is not a directory
    with pytest.raises(ArtifactNotFound):
        store.download("r/x/a", tmp_path / "none")


def test_unpack_follows_argo_rules_and_refuses_escaping_members(tmp_path: Path) -> None:
    several = tmp_path / "several.tgz"
    with tarfile.open(several, "w:gz") as tar:
        for name in ("one.txt", "two.txt"):
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    unpack_targz(several, tmp_path / "out")  # several top-level entries: the directory itself becomes the path
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.txt", "two.txt"]

    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        unpack_targz(evil, tmp_path / "evil-out")
    assert not (tmp_path / "escaped.txt").exists()

    (tmp_path / "plain.txt").write_text("not a tarball")
    pack_targz(tmp_path / "plain.txt", tmp_path / "plain.tgz")
    assert is_targz(tmp_path / "plain.tgz") and not is_targz(tmp_path / "plain.txt")


def test_bucket_is_created_once_and_reused(s3_server: S3Settings) -> None:
    from dataclasses import replace

    store = S3Store(replace(s3_server, bucket="created-by-test"))
    store.ensure_bucket()
    store.put_text("k", "v")
    store.ensure_bucket()  # exists already: no error, nothing lost
    assert store.list_keys("k") == ["k"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_endpoint_that_does_not_answer_is_one_clear_line_quickly() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(KoloraError) as err:
        S3Store(S3Settings(url, access_key_id="x", secret_access_key="y")).ensure_bucket()
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "does not answer" in message and "--s3-endpoint" in message


def test_missing_credentials_and_bad_urls_are_clear(monkeypatch: pytest.MonkeyPatch, s3_server: S3Settings) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = S3Settings.from_env(s3_server.endpoint_url)
    with pytest.raises(KoloraError, match="AWS_ACCESS_KEY_ID"):
        S3Store(settings).ensure_bucket()
    with pytest.raises(KoloraError, match="not a URL"):
        S3Store(S3Settings("localhost:9000"))


def test_embedded_store_starts_on_a_free_port_each_time(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        with EmbeddedS3(bucket="emb") as settings:
            store = S3Store(settings)
            store.ensure_bucket()
            store.put_text("hello", "world")
            assert store.exists("hello")
            ports.append(settings.endpoint_url)
    assert ports[0] != ports[1]
