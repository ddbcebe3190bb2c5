"""S3Store against the session's SeaweedFS server: Argo's artifact layout, conditional writes, bounded waits, errors."""

from __future__ import annotations

import logging
import re
import signal
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from kolora_core.errors import KoloraError, TransientError
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.archive import is_targz
from kolora_core.storage.s3 import ArtifactNotFound, PreconditionFailed, S3Settings, S3Store
from tests.storage.fake_s3 import Answer, fake_s3


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (root / "sub" / "deeper" / "c.txt").write_text("gamma")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- Argo's layout ------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("name", ["sub//b.txt", "sub/./b.txt", "/b.txt", "../../b.txt"])
def test_a_listed_object_whose_name_is_no_plain_path_is_refused_before_any_download(tmp_path: Path, name: str) -> None:
    """Someone else's key below an artifact prefix (SeaweedFS will not store these, so a fake listing names them):
    `sub//b.txt` and `sub/./b.txt` (legal S3 keys, never ones kolora writes) were KeyError tracebacks after a download
    over `sub/b.txt`; `..` left the directory."""
    keys = "".join(f"<Contents><Key>r/x/{escape(key)}</Key><Size>1</Size></Contents>" for key in ("a.txt", name))
    listing = f'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{keys}</ListBucketResult>'
    with fake_s3(Answer(body=listing.encode(), headers={"Content-Type": "application/xml"})) as fake:
        store = S3Store(S3Settings(fake.url, access_key_id="x", secret_access_key="y", max_attempts=1, deadline=10))
        with pytest.raises(KoloraError, match=rf"refusing S3 object s3://kolora/r/x/{re.escape(name)}: its name is no plain"):
            store.download_tree("r/x", tmp_path / "dest")
    assert fake.count("GET") == 1  # the listing: nothing was downloaded


def test_bucket_is_created_once_and_reused(s3_server: S3Settings) -> None:
    store = S3Store(replace(s3_server, bucket="created-by-test"))
    store.ensure_bucket()
    store.put_text("k", "v")
    store.ensure_bucket()  # exists already: no error, nothing lost
    assert store.list_keys("k") == ["k"]


# --- the completion marker goes last ------------------------------------------------------------------------


def test_directory_upload_sends_every_marker_after_every_other_file(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / COMPLETE_MARKER).write_text("{}")
    (src / "sub" / COMPLETE_MARKER).write_text("{}")
    (src / "z.txt").write_text("sorted after _SUCCESS")
    keys = store.upload(src, "r/out", archive=False)
    assert keys[-2:] == [f"r/out/sub/{COMPLETE_MARKER}", f"r/out/{COMPLETE_MARKER}"]
    assert store.download("r/out", tmp_path / "back") == "dir" and tree(tmp_path / "back") == tree(src)


def test_an_upload_cut_off_by_its_deadline_never_sends_the_marker(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / COMPLETE_MARKER).write_text("{}")  # sorts before both files: a sorted upload would send it first
    (src / "a.txt").write_text("first")
    (src / "weights.bin").write_bytes(b"\0" * (96 * 2**20))
    hurried = S3Store(replace(store.settings, deadline=0.4, deadline_rate=2**40))
    with pytest.raises(KoloraError, match=r"did not finish to upload .* within its deadline"):
        hurried.upload(src, "r/cut", archive=False)
    time.sleep(2)  # the abandoned worker stops at its next chunk; give it time to misbehave if it would
    assert store.list_keys(f"r/cut/{COMPLETE_MARKER}") == []


def test_an_upload_interrupted_by_ctrl_c_never_sends_the_marker(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\0" * (96 * 2**20))
    (src / COMPLETE_MARKER).write_text("{}")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            store.upload(src, "r/ctrl-c", archive=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(3)  # long enough for the rest of the upload, marker included, if the worker went on
    assert store.list_keys(f"r/ctrl-c/{COMPLETE_MARKER}") == []


# --- conditional writes (what publishing's compare-and-swap needs) --------------------------------------------


def test_put_if_absent_is_enforced_by_the_server(store: S3Store) -> None:
    etag = store.put_if_absent("models/x/release.json", b'{"v": 1}')
    with pytest.raises(PreconditionFailed, match="already exists with other contents"):
        store.put_if_absent("models/x/release.json", b'{"v": 2}')
    assert store.get_with_etag("models/x/release.json") == (b'{"v": 1}', etag)
    # the same bytes again is what a retried request sees after its first attempt landed: not an error
    assert store.put_if_absent("models/x/release.json", b'{"v": 1}') == etag


def test_put_if_match_is_a_compare_and_swap(store: S3Store) -> None:
    with pytest.raises(PreconditionFailed):
        store.put_if_match("latest.json", b"1", '"0123456789abcdef0123456789abcdef"')  # nothing there yet
    first = store.put_if_absent("latest.json", b"1")
    second = store.put_if_match("latest.json", b"2", first)
    with pytest.raises(PreconditionFailed, match="changed since it was read"):
        store.put_if_match("latest.json", b"3", first)  # stale ETag
    assert store.get_with_etag("latest.json") == (b"2", second) and store.etag("latest.json") == second
    assert store.etag("nothing.json") is None
    with pytest.raises(ArtifactNotFound):
        store.get_with_etag("nothing.json")


def test_concurrent_compare_and_swap_loses_no_update(store: S3Store) -> None:
    store.put_if_absent("counter", b"0")

    def add(times: int) -> None:
        for _ in range(times):
            while True:
                data, etag = store.get_with_etag("counter")
                try:
                    store.put_if_match("counter", str(int(data) + 1).encode(), etag)
                    break
                except PreconditionFailed:
                    continue

    workers = [threading.Thread(target=add, args=(10,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert store.get_with_etag("counter")[0] == b"30"


# --- bounded waits and one-line errors ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel completes them) and never sends a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_endpoint_that_does_not_answer_is_one_clear_line_quickly() -> None:
    """Transient (exit 75): a store that refuses connections may be restarting; a retried pod may find it up."""
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(TransientError) as err:
        S3Store(S3Settings(url, access_key_id="x", secret_access_key="y")).ensure_bucket()
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "does not answer" in message and "--s3-endpoint" in message


def test_a_silent_endpoint_fails_the_first_call_within_its_read_timeout(silent_endpoint: str) -> None:
    """The stated bound with the default settings: `ensure_bucket` (one attempt) gives up after read_timeout (15 s)."""
    settings = S3Settings(silent_endpoint, access_key_id="x", secret_access_key="y")
    started = time.monotonic()
    with pytest.raises(TransientError, match="stopped answering while trying to open bucket"):
        S3Store(settings).ensure_bucket()
    assert settings.read_timeout <= time.monotonic() - started < settings.read_timeout + 5


def test_an_operation_on_a_silent_endpoint_ends_at_its_deadline_and_says_so_while_waiting(
    silent_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "f.txt").write_text("x")
    settings = S3Settings(silent_endpoint, access_key_id="x", secret_access_key="y", deadline=2.0, notice_every=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kolora.storage"), pytest.raises(TransientError) as err:
        S3Store(settings).upload_file(tmp_path / "f.txt", "k")  # retries alone would take 3 x 15 s
    assert time.monotonic() - started < 3
    assert f"S3 endpoint {silent_endpoint} did not finish to upload" in str(err.value) and "deadline of 2 s" in str(err.value)
    waiting = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert len(waiting) >= 2 and "to upload" in waiting[0] and "of at most 2 s" in waiting[0]


def test_deadline_grows_with_the_bytes_an_operation_moves() -> None:
    settings = S3Settings("http://x")
    assert settings.deadline_for(0) == 60
    assert settings.deadline_for(4 * 2**30) == 60 + 1024  # 4 GiB at the 4 MiB/s floor


def test_wrong_credentials_are_refused_in_one_line(s3_server: S3Settings) -> None:
    wrong = replace(s3_server, secret_access_key="not-the-secret")
    with pytest.raises(KoloraError, match="refused the credentials") as err:
        S3Store(wrong).ensure_bucket()
    assert "\n" not in str(err.value) and "not-the-secret" not in str(err.value)
    assert not isinstance(err.value, TransientError)  # exit 2: every retry would be refused too


def test_missing_credentials_and_bad_urls_are_clear(monkeypatch: pytest.MonkeyPatch, s3_server: S3Settings) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = S3Settings.from_env(s3_server.endpoint_url)
    with pytest.raises(KoloraError, match="AWS_ACCESS_KEY_ID") as err:
        S3Store(settings).ensure_bucket()
    assert not isinstance(err.value, TransientError)
    with pytest.raises(KoloraError, match="not a URL") as err:
        S3Store(S3Settings("localhost:9000"))
    assert not isinstance(err.value, TransientError)
