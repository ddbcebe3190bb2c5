"""S3 over boto3 with bounded waits and one-line errors: the only way artifacts move between steps.

Why a wrapper and not boto3 calls in the runner: every call needs the same things the defaults get wrong
for batch software, namely path-style addressing (MinIO and SeaweedFS have no virtual hosts), bounded waits
(boto3's defaults sat 727 s on an endpoint that stopped answering, silently), and errors that say which
endpoint failed and what to do instead of a botocore traceback.

The bounds (`S3Settings`): a TCP connect gives up after 3 s; a request whose server sends nothing for 15 s
is a read timeout; a request is tried 3 times; and every operation as a whole (one upload or download of an
artifact, a listing, a conditional write) has a deadline of 60 s plus 1 s per 4 MiB it moves, with a log line
every 10 s while it waits. An endpoint that accepts connections and never answers therefore fails any
operation in about 50 s (3 x 15 s plus back-off), and `ensure_bucket`, the first call of a run, in 15 s.

Errors are sorted by whether a retry can help (`transient.py`, botocore's own retry verdict): what botocore
retries (5xx, 429, SlowDown and throttling, a connection refused, reset or timed out, a server that stops
answering) and an operation past its deadline raise `TransientError` (exit 75, which the workflow retries); bad
credentials, a missing bucket, an invalid key, any other 4xx, a host DNS does not know and a URL that is not one
raise `KoloraError` (exit 2, never retried). The message is one line either way.

Directory uploads send the completion marker `_SUCCESS` after every other file, so a reader that trusts
the marker never sees a partial upload as complete; a cancelled upload never sends it.

`S3Store.upload` / `S3Store.download` implement Argo's artifact layout: an archived artifact is one tar.gz
object at its key; an unarchived file is one object at its key; an unarchived directory is one object per
file under `<key>/`. Downloading looks for the object first, then for the prefix, and unpacks tarballs by
content, as Argo's executor does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import RetriesExceededError
from boto3.s3.transfer import S3UploadFailedError, TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from kolora_core.errors import KoloraError, TransientError
from kolora_core.relative_names import is_relative_name
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.archive import is_targz, pack_targz, unpack_targz
from kolora_core.storage.errors import ArtifactNotFound, PreconditionFailed
from kolora_core.storage.transient import is_transient, is_transient_code, name_not_known

DEFAULT_BUCKET = "kolora"
DEFAULT_REGION = "us-east-1"
MiB = 1024 * 1024
log = logging.getLogger("kolora.storage")
SERVER_ERRORS = {"InternalError", "500", "ServiceUnavailable", "503"}  # the server's fault, not the request's
# what to do about an endpoint that does not answer; a command whose --s3-endpoint is optional adds its default
UNREACHABLE_FIX = "start the server or fix --s3-endpoint"
OR_EMBEDDED = f"{UNREACHABLE_FIX} (leave it out to use the embedded store)"
T = TypeVar("T")
HEADS_AT_ONCE = 8  # concurrent HEAD requests of `user_metadata` (botocore's connection pool holds 10)
HEADS_PER_OPERATION = 256  # HEADs sharing one operation's deadline: 32 rounds of 8 within its 60 s


@dataclass(frozen=True)
class S3Settings:
    """Where artifacts live. Credentials come from the caller (env vars for external endpoints); never printed.

    `endpoint_url` '' means AWS S3 itself: boto3's own endpoint for `region` and virtual-hosted addressing
    (what `--s3-endpoint ''` gives, the workflow's AWS setting); any other value is an http(s) URL.
    """

    endpoint_url: str
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    multipart_threshold: int = 64 * MiB  # objects above this go up in parts
    connect_timeout: float = 3.0  # seconds for a TCP connect
    read_timeout: float = 15.0  # seconds without a byte from the server before a request counts as failed
    max_attempts: int = 3  # tries per request (standard retry mode: exponential back-off with jitter)
    deadline: float = 60.0  # seconds every operation may take, plus 1 s per `deadline_rate` bytes it moves
    deadline_rate: int = 4 * MiB
    notice_every: float = 10.0  # seconds between "still waiting" log lines of one operation
    embedded: bool = False
    unreachable_fix: str = UNREACHABLE_FIX  # the advice when the endpoint does not answer: the caller knows its options
    # what the server's own state says about a 5xx it answered (the embedded store reads its log); None: nothing
    explain_server_error: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_env(
        cls, endpoint_url: str, bucket: str = DEFAULT_BUCKET, region: str | None = None, unreachable_fix: str = UNREACHABLE_FIX
    ) -> S3Settings:
        """Settings for an external endpoint with the standard AWS variables (unset ones fall back to boto3's chain)."""
        return cls(
            endpoint_url=endpoint_url,
            bucket=bucket,
            region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            unreachable_fix=unreachable_fix,
        )

    @property
    def aws(self) -> bool:
        """No endpoint: AWS S3 of `region`."""
        return not self.endpoint_url

    @property
    def label(self) -> str:
        if self.embedded:
            return "embedded S3 store"
        return f"AWS S3 ({self.region})" if self.aws else f"S3 endpoint {self.endpoint_url}"

    def deadline_for(self, size: int) -> float:
        """Seconds an operation that moves `size` bytes may take in all (a floor of 4 MiB/s after the base)."""
        return self.deadline + size / self.deadline_rate


def make_client(settings: S3Settings, *, max_attempts: int | None = None) -> Any:
    """A boto3 S3 client for `settings`: path-style (AWS: boto3's choice), SigV4, short connect timeout, few retries."""
    if not settings.aws and not settings.endpoint_url.startswith(("http://", "https://")):
        raise KoloraError(f"S3 endpoint '{settings.endpoint_url}' is not a URL: pass it as http://host:port or https://host")
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"total_max_attempts": max_attempts or settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": "auto" if settings.aws else "path"},
        signature_version="s3v4",
    )
    try:
        return _session().client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=config,
        )
    except ValueError as exc:
        raise KoloraError(f"S3 endpoint '{settings.endpoint_url}' is not usable: {exc}") from None


@functools.cache
def _session() -> boto3.session.Session:
    """One session per process: each new session re-reads botocore's service models (~0.3 s per client)."""
    return boto3.session.Session()


def _connect_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "kwargs", {}).get("error", "")) + " " + str(exc)
    if isinstance(exc, ConnectTimeoutError):
        return "no answer before the connect timeout"
    if "refused" in text.lower():
        return "connection refused"
    if name_not_known(exc) or "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "host name not found"
    return "cannot connect"


def _failure(exc: BaseException) -> type[KoloraError]:
    """`TransientError` (exit 75, retried) for a failure a retry may not repeat, else `KoloraError` (exit 2)."""
    return TransientError if is_transient(exc) else KoloraError


@contextlib.contextmanager
def s3_errors(settings: S3Settings, action: str) -> Iterator[None]:
    """Turn botocore failures into one-line errors that name the endpoint, the action and the fix; their type says
    whether the workflow should retry (`TransientError`, exit 75) or the user fix something (`KoloraError`, exit 2)."""
    where = settings.label
    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        fix = settings.unreachable_fix
        raise _failure(exc)(f"{where} does not answer ({_connect_reason(exc)}) while trying to {action}: {fix}") from None
    except ReadTimeoutError as exc:
        raise _failure(exc)(f"{where} stopped answering while trying to {action}: check the server and rerun") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise KoloraError(
            f"no credentials for {where} while trying to {action}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except (ClientError, S3UploadFailedError) as exc:
        code, message = _client_error(exc)
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}:
            raise KoloraError(
                f"{where} refused the credentials ({code}) while trying to {action}: "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from None
        if settings.explain_server_error is not None and code in SERVER_ERRORS:
            message = f"{message} -- {settings.explain_server_error()}"
        raise _failure(exc)(f"{where} failed to {action}: {code} {message}".strip()) from None
    except RetriesExceededError as exc:  # s3transfer's own retries of a broken download stream ran out
        raise _failure(exc)(f"{where} failed to {action}: {exc.last_exception}") from None
    except BotoCoreError as exc:
        raise _failure(exc)(f"{where} failed to {action}: {exc}") from None


def _client_error(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code", "")), str(err.get("Message", ""))
    cause = exc.__context__ or exc.__cause__
    if isinstance(cause, ClientError):
        return _client_error(cause)
    return type(exc).__name__, str(exc)


def clean_key(key: str) -> str:
    """Keys are relative to the bucket: a leading or trailing slash is dropped, an empty, '.' or '..' segment refused."""
    key = key.strip().strip("/")
    if not is_relative_name(key):
        raise KoloraError(f"S3 key '{key}' is not a valid object key (an empty, '.' or '..' segment)")
    return key


class _Cancelled(Exception):
    """Raised inside a worker whose operation passed its deadline, so it stops before writing anything more."""


class _Progress:
    """Bytes moved by one operation (boto3 transfer callbacks), and the flag that stops it at its deadline."""

    def __init__(self) -> None:
        self.moved = 0
        self.cancelled = threading.Event()

    def __call__(self, count: int) -> None:
        self.check()
        self.moved += count

    def check(self) -> None:
        if self.cancelled.is_set():
            raise _Cancelled


def size_text(count: float) -> str:
    """Bytes for people: KiB, MiB or GiB, one or two decimals."""
    if count < MiB:
        return f"{count / 1024:.1f} KiB"
    return f"{count / MiB:.1f} MiB" if count < 1024 * MiB else f"{count / (1024 * MiB):.2f} GiB"


class S3Store:
    """One bucket on one endpoint, with Argo's artifact layout on top of plain objects.

    Every public method is one bounded operation (see the module docstring): it runs in a worker thread
    while the caller waits with a deadline, logging a line every `notice_every` seconds; at the deadline the
    caller gets a `TransientError` (a slow server may be quicker on the workflow's retry) and the worker stops at
    its next chunk or file.
    """

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = make_client(settings)
        self._transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=max(8 * MiB, min(settings.multipart_threshold, 512 * MiB)),
            max_concurrency=4,
            num_download_attempts=2,  # on top of botocore's attempts per request (s3transfer's default is 5)
        )

    def _bounded(self, action: str, work: Callable[[_Progress], T], size: int = 0) -> T:
        """Run `work` with the operation's deadline; errors become one-line `KoloraError`s naming `action` (`s3_errors`)."""
        limit = self.settings.deadline_for(size)
        progress = _Progress()
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                with s3_errors(self.settings, action):
                    box["value"] = work(progress)
            except BaseException as exc:  # noqa: BLE001 (handed to the waiting caller, which raises it)
                box["error"] = exc
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=run, name="kolora-s3", daemon=True).start()
        try:
            while not done.wait(max(0.0, min(self.settings.notice_every, started + limit - time.monotonic()))):
                waited = time.monotonic() - started
                if waited >= limit:
                    raise TransientError(
                        f"{self.settings.label} did not finish to {action} within its deadline of {limit:.0f} s "
                        f"({size_text(progress.moved)} of {size_text(size)} moved): check the server and rerun"
                    )
                moved = f", {size_text(progress.moved)} of {size_text(size)}" if size else ""
                line = "kolora: still waiting for %s to %s (%.0f s of at most %.0f s%s)"
                log.warning(line, self.settings.label, action, waited, limit, moved)
        except BaseException:  # the deadline, Ctrl-C: the worker stops at its next chunk or file, marker unsent
            progress.cancelled.set()
            raise
        if "error" in box:
            raise box["error"]
        return box["value"]

    # --- bucket ---------------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Check the endpoint answers (one attempt: a dead endpoint fails in seconds) and create the bucket if missing."""
        self._check_reachable()
        probe = make_client(self.settings, max_attempts=1)

        def work(_: _Progress) -> None:
            try:
                probe.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _client_error(exc)[0] not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            try:
                self._client.create_bucket(**kwargs)
            except ClientError as exc:
                if _client_error(exc)[0] not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

        self._bounded(f"open bucket '{self.bucket}'", work)

    def _check_reachable(self) -> None:
        """A plain TCP connect first, so a dead endpoint is reported as such even before credentials are looked at.

        Refused, timed out or unreachable is `TransientError` (a server restarting, a network blip: what botocore
        retries too); a host name DNS does not know is `KoloraError`: the URL is wrong."""
        url = urlsplit(self._client.meta.endpoint_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "", port), timeout=self.settings.connect_timeout).close()
        except OSError as exc:
            reason = (
                "connection refused"
                if isinstance(exc, ConnectionRefusedError)
                else ("no answer before the connect timeout" if isinstance(exc, TimeoutError) else str(exc.strerror or exc))
            )
            error = KoloraError if name_not_known(exc) else TransientError
            raise error(f"{self.settings.label} does not answer ({reason}): {self.settings.unreachable_fix}") from None

    # --- objects --------------------------------------------------------------------------------------------

    def _objects(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object whose key starts with `prefix` (unbounded: call inside an operation)."""
        found: list[tuple[str, int]] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found += [(obj["Key"], int(obj["Size"])) for obj in page.get("Contents", [])]
        return found

    def object_sizes(self, prefix: str) -> dict[str, int]:
        """The size of every object whose key starts with `prefix`, by key, in listing order (one listing, no HEADs)."""
        return dict(self._bounded(f"list s3://{self.bucket}/{prefix}", lambda _: self._objects(prefix)))

    def list_keys(self, prefix: str) -> list[str]:
        """All keys starting with `prefix` (a plain string prefix: add '/' yourself for directory semantics)."""
        return list(self.object_sizes(prefix))

    def size(self, prefix: str) -> int:
        """Bytes stored under `prefix` (one object or a directory's worth)."""
        return sum(self.object_sizes(prefix).values())

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _client_error(exc)[0] in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._bounded(f"look up s3://{self.bucket}/{key}", lambda _: self._head(key)) is not None

    def etag(self, key: str) -> str | None:
        """The object's current ETag (for `put_if_match`), or None if there is no object at `key`."""
        head = self._bounded(f"look up s3://{self.bucket}/{key}", lambda _: self._head(key))
        return None if head is None else str(head["ETag"])

    def user_metadata(self, keys: list[str]) -> dict[str, dict[str, str]]:
        """The user metadata (`x-amz-meta-<name>`, names lower-case) of each of `keys` that exists; a missing one is
        left out. A listing carries no metadata, so each key costs a HEAD: a few run at once, and every
        `HEADS_PER_OPERATION` of them are one bounded operation, so thousands of keys never meet one deadline."""
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(keys), HEADS_PER_OPERATION):
            batch = keys[start : start + HEADS_PER_OPERATION]
            action = f"look up {len(batch)} object(s) in s3://{self.bucket}"
            found |= self._bounded(action, lambda progress, batch=batch: self._metadata(batch, progress))
        return found

    def _metadata(self, keys: list[str], progress: _Progress) -> dict[str, dict[str, str]]:
        def head(key: str) -> dict[str, Any] | None:
            progress.check()  # past the deadline: the HEADs not yet sent are not sent
            return self._head(key)

        pool = ThreadPoolExecutor(HEADS_AT_ONCE, thread_name_prefix="kolora-s3-head")
        try:
            heads = list(pool.map(head, keys))
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, the HEADs still queued are dropped
        return {key: dict(found.get("Metadata", {})) for key, found in zip(keys, heads, strict=True) if found is not None}

    def upload_file(self, path: Path, key: str, metadata: dict[str, str] | None = None) -> None:
        """One object from `path`; `metadata` is stored with it as `x-amz-meta-<name>` headers (`user_metadata`)."""
        size = path.stat().st_size
        extra = {"Metadata": metadata} if metadata else None

        def work(progress: _Progress) -> None:
            self._client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer, Callback=progress)

        self._bounded(f"upload {path} to s3://{self.bucket}/{key}", work, size)

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        head = self._bounded(f"look up s3://{self.bucket}/{key}", lambda _: self._head(key))
        if head is None:
            raise ArtifactNotFound(f"no object s3://{self.bucket}/{key} on {self.settings.label}")

        def work(progress: _Progress) -> None:
            self._client.download_file(self.bucket, key, str(path), Config=self._transfer, Callback=progress)

        self._bounded(f"download s3://{self.bucket}/{key}", work, int(head.get("ContentLength", 0)))

    def put_text(self, key: str, text: str) -> None:
        data = text.encode()

        def work(_: _Progress) -> None:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

        self._bounded(f"write s3://{self.bucket}/{key}", work, len(data))

    def _delete(self, keys: list[str], progress: _Progress) -> None:
        """DeleteObjects in batches of 1000; a key the server did not delete (it answers 200 and lists it, e.g. a
        policy without s3:DeleteObject) is an error naming it, not a silent success."""
        for start in range(0, len(keys), 1000):
            progress.check()
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            with s3_errors(self.settings, f"delete objects in s3://{self.bucket}"):
                answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                transient = is_transient_code(str(first.get("Code", "")))
                raise (TransientError if transient else KoloraError)(
                    f"{self.settings.label} did not delete s3://{self.bucket}/{first.get('Key')} ({first.get('Code')}: "
                    f"{first.get('Message')}){f' and {len(failed) - 1} more' if len(failed) > 1 else ''}: "
                    + ("check the server and rerun" if transient else "check the credentials' delete permission")
                )

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many there were."""

        def work(progress: _Progress) -> int:
            keys = [key for key, _ in self._objects(prefix)]
            self._delete(keys, progress)
            return len(keys)

        return self._bounded(f"delete s3://{self.bucket}/{prefix}", work)

    def delete_keys(self, keys: list[str]) -> None:
        """Delete these objects, keys as listed (absent ones are no error, as S3 has it)."""
        if keys:
            self._bounded(f"delete {len(keys)} object(s) in s3://{self.bucket}", lambda progress: self._delete(keys, progress))

    # --- conditional writes (compare-and-swap for pointers such as latest.json) ------------------------------

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the ETag to pass to `put_if_match`; `ArtifactNotFound` if there is none."""

        def work(_: _Progress) -> tuple[bytes, str] | None:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _client_error(exc)[0] in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return response["Body"].read(), str(response["ETag"])

        found = self._bounded(f"read s3://{self.bucket}/{key}", work)
        if found is None:
            raise ArtifactNotFound(f"no object s3://{self.bucket}/{key} on {self.settings.label}")
        return found

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write `data` at `key` only if no object is there (If-None-Match: *); returns the new ETag.

        `PreconditionFailed` if another writer got there first. A 412 whose object holds exactly `data`
        counts as written (creating the same bytes twice is idempotent; it is also what a retried request
        sees when its first attempt landed).
        """

        def work(_: _Progress) -> str | None:
            try:
                return str(self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"])
            except ClientError as exc:
                if _client_error(exc)[0] not in {"PreconditionFailed", "412"}:
                    raise
            current = self._client.get_object(Bucket=self.bucket, Key=key)
            return str(current["ETag"]) if current["Body"].read() == data else None

        written = self._bounded(f"create s3://{self.bucket}/{key}", work, len(data))
        if written is None:
            raise PreconditionFailed(f"s3://{self.bucket}/{key} already exists with other contents: another writer won")
        return written

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace the object at `key` only if its ETag is still `etag` (If-Match); returns the new ETag.

        `PreconditionFailed` if it changed or disappeared since it was read: read it again and decide. No
        same-bytes shortcut here: two writers computing the same new value from one old value must not both
        win (that would lose an update), so a retried request whose first attempt landed also gets this error.
        """

        def work(_: _Progress) -> str | None:
            try:
                return str(self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfMatch=etag)["ETag"])
            except ClientError as exc:
                # If-Match on a missing key: 404 from AWS S3, 412 from SeaweedFS and MinIO
                if _client_error(exc)[0] not in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
                    raise
            return None

        written = self._bounded(f"replace s3://{self.bucket}/{key}", work, len(data))
        if written is None:
            raise PreconditionFailed(f"s3://{self.bucket}/{key} changed since it was read (ETag {etag}): another writer won")
        return written

    # --- directories and archives ---------------------------------------------------------------------------

    def upload_tree(self, directory: Path, prefix: str) -> list[str]:
        """One object per file under `directory`, at `<prefix>/<relative path>`, completion markers last; returns the keys."""
        prefix = clean_key(prefix)
        files = _marker_last([p for p in directory.rglob("*") if p.is_file()], directory)
        total = sum(p.stat().st_size for p in files)

        def work(progress: _Progress) -> list[str]:
            keys = []
            for path in files:
                progress.check()  # a cancelled upload must not go on to send its marker
                key = f"{prefix}/{path.relative_to(directory).as_posix()}"
                with s3_errors(self.settings, f"upload {path} to s3://{self.bucket}/{key}"):
                    self._client.upload_file(str(path), self.bucket, key, Config=self._transfer, Callback=progress)
                keys.append(key)
            return keys

        return self._bounded(f"upload {directory} to s3://{self.bucket}/{prefix}/", work, total)

    def download_tree(self, prefix: str, directory: Path) -> int:
        """Every object under `<prefix>/` into `directory`, keeping relative paths (markers last); returns the file count."""
        prefix = clean_key(prefix)
        objects = self._bounded(f"list s3://{self.bucket}/{prefix}/", lambda _: self._objects(prefix + "/"))
        wanted: dict[str, tuple[str, int]] = {}
        for key, size in objects:
            rel = key[len(prefix) + 1 :]
            if not rel or rel.endswith("/"):
                continue  # folder markers some tools write
            if not is_relative_name(rel):
                raise KoloraError(
                    f"refusing S3 object s3://{self.bucket}/{key}: its name is no plain path inside the artifact directory "
                    "(an empty, '.' or '..' part would leave it, or land on another object's file)"
                )
            wanted[rel] = (key, size)
        order = _marker_last([directory / rel for rel in wanted], directory)

        def work(progress: _Progress) -> int:
            for path in order:
                progress.check()
                key = wanted[path.relative_to(directory).as_posix()][0]
                path.parent.mkdir(parents=True, exist_ok=True)
                with s3_errors(self.settings, f"download s3://{self.bucket}/{key}"):
                    self._client.download_file(self.bucket, key, str(path), Config=self._transfer, Callback=progress)
            return len(order)

        return self._bounded(f"download s3://{self.bucket}/{prefix}/", work, sum(size for _, size in wanted.values()))

    def upload_archive(self, source: Path, key: str) -> None:
        """`source` (file or directory) as one tar.gz object at `key`."""
        with tempfile.TemporaryDirectory(prefix="kolora-tgz-") as tmp:
            archive = Path(tmp) / "artifact.tgz"
            pack_targz(source, archive)
            self.upload_file(archive, clean_key(key))

    # --- Argo artifacts -------------------------------------------------------------------------------------

    def upload(self, source: Path, key: str, *, archive: bool) -> list[str]:
        """Store an output artifact the way Argo does; returns the keys written."""
        key = clean_key(key)
        if archive:
            self.upload_archive(source, key)
            return [key]
        if source.is_dir():
            return self.upload_tree(source, key)
        self.upload_file(source, key)
        return [key]

    def has_artifact(self, key: str) -> bool:
        """Whether `download` finds an artifact at `key`: one object there, or objects under `key/`."""
        key = clean_key(key)
        return self.exists(key) or bool(self.list_keys(key + "/"))

    def download(self, key: str, dest: Path) -> Literal["file", "dir"]:
        """Fetch an input artifact to `dest` the way Argo does; says whether `dest` became a file or a directory.

        An object at exactly `key` wins (unpacked if it is a tarball); otherwise every object under `key/`
        becomes a directory. Neither: `ArtifactNotFound`.
        """
        key = clean_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.exists(key):
            tmp = dest.parent / f".{dest.name}.download"
            try:
                self.download_file(key, tmp)
                if is_targz(tmp):
                    unpack_targz(tmp, dest)
                else:
                    _remove(dest)
                    tmp.rename(dest)
            finally:
                tmp.unlink(missing_ok=True)
            return "dir" if dest.is_dir() else "file"
        if self.list_keys(key + "/"):
            _remove(dest)
            dest.mkdir(parents=True)
            self.download_tree(key, dest)
            return "dir"
        raise ArtifactNotFound(f"no object or prefix s3://{self.bucket}/{key} on {self.settings.label}")


def open_at_command_line(store: S3Store) -> None:
    """`store.ensure_bucket()` for a command a person runs (`kolora run`, `kolora upload`): a store that fails before
    the command started anything is exit 2, even when the failure is transient (exit 75 everywhere else).

    Why: it is the store the user named with --s3-endpoint (or the embedded one), no workflow retries these commands,
    and nothing has started yet (a store that does not answer gets the advice: start it, fix or drop --s3-endpoint).
    Once the command is under way, a transient failure stays exit 75: run it again. The workflow's steps that talk
    to the store (`kolora champion`, `kolora publish`) do not use this: a transient failure there is exit 75."""
    try:
        store.ensure_bucket()
    except TransientError as exc:
        raise KoloraError(str(exc)) from None


def _marker_last(paths: list[Path], root: Path) -> list[Path]:
    """Sorted, with every `_SUCCESS` after all other files and the deepest markers first (the top one last)."""

    def order(path: Path) -> tuple[bool, int, Path]:
        marker = path.name == COMPLETE_MARKER
        return marker, -len(path.relative_to(root).parts) if marker else 0, path

    return sorted(paths, key=order)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
