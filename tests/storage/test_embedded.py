"""The embedded SeaweedFS store: loopback only, persistent, one server per directory, gone with its owner, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from kolora_core.errors import KoloraError, TransientError
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage import embedded
from kolora_core.storage.embedded import EmbeddedS3, StorePorts
from kolora_core.storage.s3 import S3Store

REPO = Path(__file__).resolve().parents[2]


def store_processes(directory: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes serving the store in `directory`, found by their command line."""
    flag = f"-dir={directory.resolve() / 'data'}"
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if flag in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def wait_gone(directory: Path, timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while store_processes(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    return store_processes(directory)


def test_every_port_of_the_server_is_on_loopback(seaweedfs: EmbeddedS3) -> None:
    assert seaweedfs.process is not None and seaweedfs.ports is not None
    tree = [psutil.Process(seaweedfs.process.pid), *psutil.Process(seaweedfs.process.pid).children(recursive=True)]
    listening = [c for p in tree for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN or not c.raddr]
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert {c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN} == set(seaweedfs.ports.values())


def test_objects_and_keys_survive_a_restart_and_credentials_are_private(tmp_path: Path) -> None:
    with EmbeddedS3(tmp_path / "store") as first:
        S3Store(first).put_text("models/kolora/latest.json", '{"version": "v1"}')
    creds = tmp_path / "store" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert not (tmp_path / "store" / "server.json").exists() and wait_gone(tmp_path / "store") == []
    with EmbeddedS3(tmp_path / "store") as second:
        assert (second.access_key_id, second.secret_access_key) == (first.access_key_id, first.secret_access_key)
        assert S3Store(second).get_with_etag("models/kolora/latest.json")[0] == b'{"version": "v1"}'
    assert json.loads(creds.read_text())["identities"][0]["credentials"][0]["accessKey"] == first.access_key_id


def test_a_temporary_store_leaves_nothing(tmp_path: Path) -> None:
    server = EmbeddedS3()
    with server as settings:
        S3Store(settings).put_text("k", "v")
    assert not server.directory.exists()


def test_the_server_dies_with_its_owner_process(tmp_path: Path) -> None:
    """SIGKILL to the owner (no cleanup code runs): the kernel kills the server too (PR_SET_PDEATHSIG)."""
    script = (
        "import sys, time; from pathlib import Path; from kolora_core.storage.embedded import EmbeddedS3\n"
        "s = EmbeddedS3(Path(sys.argv[1])); s.start(); print(s.process.pid, flush=True); time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "store")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        weed = int(owner.stdout.readline())  # type: ignore[union-attr]
        assert psutil.pid_exists(weed) and store_processes(tmp_path / "store")
        owner.kill()
        owner.wait()
        assert wait_gone(tmp_path / "store") == []
    finally:
        owner.kill()
    with EmbeddedS3(tmp_path / "store") as settings:  # and the store starts again afterwards
        S3Store(settings).ensure_bucket()


def test_a_dead_servers_recorded_ports_do_not_cost_a_live_server_its_sockets(tmp_path: Path) -> None:
    """A store's earlier server died long ago; its ports (in server.json) now belong to another weed, whose processes
    dial each other through /tmp/seaweedfs-*-<port>.sock. Starting the store clears only the stale files of them."""
    live_port, stale_port = 1, 2  # names only: weed's file names carry the port; these two no TCP server uses
    live_path, stale_path = (Path(f"/tmp/seaweedfs-master-grpc-{p}.sock") for p in (live_port, stale_port))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for path in (live_path, stale_path):
            path.unlink(missing_ok=True)
        listener.bind(str(live_path))
        listener.listen()
        stale.bind(str(stale_path))  # bound, never listening, closed: what a killed weed leaves behind
        stale.close()
        store = tmp_path / "store"
        store.mkdir()
        (store / "server.json").write_text(json.dumps({"pid": 2**22 + 7, "ports": {"master_grpc": live_port, "s3": stale_port}}))
        with EmbeddedS3(store) as settings:
            S3Store(settings).ensure_bucket()
            assert live_path.exists(), "another server's live socket is left alone"
            assert not stale_path.exists(), "a dead server's stale socket is cleared"
    finally:
        listener.close()
        for path in (live_path, stale_path):
            path.unlink(missing_ok=True)


def test_two_stores_starting_together_get_their_own_ports(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from kolora_core.storage.embedded import EmbeddedS3\n"
        "from kolora_core.storage.s3 import S3Store\n"
        "with EmbeddedS3(Path(sys.argv[1])) as s:\n"
        "    S3Store(s).put_text('who', sys.argv[1]); print(s.endpoint_url, S3Store(s).list_keys('who'))\n"
    )
    owners = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    outputs = [o.communicate(timeout=120)[0].split() for o in owners]
    assert [o.returncode for o in owners] == [0, 0]
    assert outputs[0][0] != outputs[1][0]


def test_a_store_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with EmbeddedS3(tmp_path / "store"):
        with pytest.raises(KoloraError) as err:
            EmbeddedS3(tmp_path / "store").start()
        expected = f"embedded store {tmp_path / 'store'} is in use by another kolora command (pid {os.getpid()})"
        assert str(err.value).startswith(expected)
        assert len(store_processes(tmp_path / "store")) == 1


def test_a_store_directory_that_is_not_writable_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    unwritable = Path("/sys")  # sysfs: not even root can create a file there
    if os.geteuid() != 0:
        unwritable = tmp_path / "read-only"
        unwritable.mkdir()
        unwritable.chmod(0o500)
    for directory in (unwritable, tmp_path / "file" / "store"):
        with pytest.raises(KoloraError) as err:
            EmbeddedS3(directory).start()
        message = str(err.value)
        assert message.startswith(f"embedded store directory {directory} is not writable (") and "--s3-endpoint" in message


def test_a_port_that_is_taken_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(KoloraError, match=f"port 127.0.0.1:{port} is already taken, so the embedded store cannot start"):
            EmbeddedS3(tmp_path / "store", s3_port=port).start()
    assert store_processes(tmp_path / "store") == []


def test_a_port_taken_between_choice_and_bind_is_retried_then_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process can take a chosen port before weed binds it: weed exits, the store retries with fresh ports."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        real_pick = StorePorts.pick
        picks: list[StorePorts] = []

        def racing_pick(s3: int | None = None) -> StorePorts:
            ports = real_pick(s3)
            if len(picks) < limit:
                ports = StorePorts(**{**ports.__dict__, "volume": port})  # what a lost race looks like to weed
            picks.append(ports)
            return ports

        monkeypatch.setattr(StorePorts, "pick", staticmethod(racing_pick))
        limit = 1
        with EmbeddedS3(tmp_path / "store") as settings:
            S3Store(settings).ensure_bucket()
        assert len(picks) == 2 and picks[1].volume != port
        picks.clear()
        limit = embedded.START_ATTEMPTS
        with pytest.raises(KoloraError, match=f"port 127.0.0.1:{port} is already taken"):
            EmbeddedS3(tmp_path / "store").start()
        assert len(picks) == embedded.START_ATTEMPTS


@pytest.mark.parametrize("bucket", ["b0", "Kolora", "-kolora", "a" * 64, "my_team_bucket"])
def test_a_bucket_name_s3_refuses_is_one_line_before_the_server_starts(tmp_path: Path, bucket: str) -> None:
    refusal = rf"^bucket name '{bucket}' is not an S3 bucket name \(S3's rule, for the embedded store\): use 3-63"
    with pytest.raises(KoloraError, match=refusal):
        EmbeddedS3(tmp_path / "store", bucket=bucket)
    assert not (tmp_path / "store").exists(), "nothing started, nothing written"


def test_a_binary_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "weed"
    garbage.write_bytes(b"\x7fELF not really")
    garbage.chmod(0o755)
    with pytest.raises(KoloraError, match=rf"cannot start the embedded store's server {garbage}: Exec format error"):
        EmbeddedS3(tmp_path / "store", binary=garbage).start()
    with pytest.raises(KoloraError, match="No such file or directory"):
        EmbeddedS3(tmp_path / "store", binary=tmp_path / "missing").start()
    dies = tmp_path / "dies"
    dies.write_text("#!/bin/sh\necho 'F1201 10:00:00.000000 server.go:1 cannot open the volume index'\nexit 3\n")
    dies.chmod(0o755)
    with pytest.raises(KoloraError, match=r"server stopped while starting \(cannot open the volume index\); its log: "):
        EmbeddedS3(tmp_path / "store", binary=dies).start()
    assert not (tmp_path / "store" / "server.json").exists()


def test_a_server_killed_mid_upload_fails_the_upload_and_keeps_what_was_written(tmp_path: Path) -> None:
    src = tmp_path / "out"
    src.mkdir()
    (src / "a.txt").write_text("first")
    (src / "weights.bin").write_bytes(os.urandom(128 * 2**20))
    (src / COMPLETE_MARKER).write_text("{}")
    server = EmbeddedS3(tmp_path / "store")
    settings = server.start()
    try:
        store = S3Store(settings)
        store.ensure_bucket()
        failure: list[BaseException] = []

        def upload() -> None:
            try:
                store.upload(src, "run/out", archive=False)
            except BaseException as exc:  # noqa: BLE001 (inspected below)
                failure.append(exc)

        uploader = threading.Thread(target=upload)
        uploader.start()
        while not store.exists("run/out/a.txt"):
            time.sleep(0.01)
        assert server.process is not None
        server.process.kill()  # weights.bin is on its way now
        started = time.monotonic()
        uploader.join(timeout=120)
        assert not uploader.is_alive() and time.monotonic() - started < 30
        assert isinstance(failure[0], TransientError) and "does not answer" in str(failure[0])  # exit 75: retried
    finally:
        server.stop()
    with EmbeddedS3(tmp_path / "store") as again:
        after = S3Store(again)
        assert after.get_with_etag("run/out/a.txt")[0] == b"first"
        assert not after.exists(f"run/out/{COMPLETE_MARKER}")


def test_a_store_out_of_disk_for_a_new_volume_says_so_and_names_the_free_space(tmp_path: Path) -> None:
    """weed answers a write it has no volume for with a bare InternalError; kolora's line names the disk instead."""
    too_big = 4 * shutil.disk_usage(tmp_path).free // (1024 * 1024)  # volumes larger than the whole free disk
    with EmbeddedS3(tmp_path / "store", volume_size_mb=too_big) as settings:
        store = S3Store(replace(settings, bucket="second-bucket"))  # a bucket without a volume yet
        store.ensure_bucket()
        with pytest.raises(KoloraError) as failed:
            store.put_text("a/b.txt", "hello")
    line = str(failed.value)
    assert "InternalError" in line and "\n" not in line
    assert f"each new one needs {too_big} MB of free disk" in line and "MB free; free disk space there" in line
    assert str(tmp_path / "store" / "data") in line


def test_a_server_error_with_room_on_disk_points_at_the_store_log(seaweedfs: EmbeddedS3) -> None:
    assert seaweedfs.explain_server_error() == f"see the store's log: {seaweedfs.log_path}"
