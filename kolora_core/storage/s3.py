"""S3 over boto3 with short timeouts and one-line errors: the only way artifacts move between steps.

Why a wrapper and not boto3 calls in the runner: every call needs the same three things the defaults get wrong
for a developer tool, namely path-style addressing (MinIO and the embedded server have no virtual hosts),
a short connect timeout with few retries (boto3's defaults wait minutes on a dead endpoint), and errors that
say which endpoint failed and what to do instead of a botocore traceback.

`S3Store.upload` / `S3Store.download` implement Argo's artifact layout: an archived artifact is one tar.gz
object at its key; an unarchived file is one object at its key; an unarchived directory is one object per
file under `<key>/`. Downloading looks for the object first, then for the prefix, and unpacks tarballs by
content, as Argo's executor does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
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

from kolora_core.errors import KoloraError
from kolora_core.storage.archive import is_targz, pack_targz, unpack_targz

DEFAULT_BUCKET = "kolora"
DEFAULT_REGION = "us-east-1"
MiB = 1024 * 1024


class ArtifactNotFound(KoloraError):
    """No object and no prefix at the key: the producing step did not upload it (or it is optional)."""


@dataclass(frozen=True)
class S3Settings:
    """Where artifacts live. Credentials come from the caller (env vars for external endpoints); never printed."""

    endpoint_url: str
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    # Objects above this size go up in parts. The embedded server raises it: moto re-reads a whole object
    # for every ranged GET, so many small parts of a big file cost quadratic time there.
    multipart_threshold: int = 64 * MiB
    connect_timeout: float = 3.0
    read_timeout: float = 120.0
    max_attempts: int = 3
    embedded: bool = False

    @classmethod
    def from_env(cls, endpoint_url: str, bucket: str = DEFAULT_BUCKET, region: str | None = None) -> S3Settings:
        """Settings for an external endpoint with the standard AWS variables (unset ones fall back to boto3's chain)."""
        return cls(
            endpoint_url=endpoint_url,
            bucket=bucket,
            region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        )

    @property
    def label(self) -> str:
        return "embedded S3 store" if self.embedded else f"S3 endpoint {self.endpoint_url}"


def make_client(settings: S3Settings, *, max_attempts: int | None = None) -> Any:
    """A boto3 S3 client for `settings`: path-style, SigV4, short connect timeout, few retries."""
    if not settings.endpoint_url.startswith(("http://", "https://")):
        raise KoloraError(f"S3 endpoint '{settings.endpoint_url}' is not a URL: pass it as http://host:port or https://host")
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"total_max_attempts": max_attempts or settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    try:
        return _session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
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
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "host name not found"
    return "cannot connect"


@contextlib.contextmanager
def s3_errors(settings: S3Settings, action: str) -> Iterator[None]:
    """Turn botocore failures into one-line `KoloraError`s that name the endpoint, the action and the fix."""
    where = settings.label
    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        fix = (
            "this is a bug in the embedded store; rerun"
            if settings.embedded
            else "start the server or fix --s3-endpoint (leave it out to use the embedded store)"
        )
        raise KoloraError(f"{where} does not answer ({_connect_reason(exc)}) while trying to {action}: {fix}") from None
    except ReadTimeoutError:
        raise KoloraError(f"{where} stopped answering while trying to {action}: check the server and rerun") from None
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
        raise KoloraError(f"{where} failed to {action}: {code} {message}".strip()) from None
    except BotoCoreError as exc:
        raise KoloraError(f"{where} failed to {action}: {exc}") from None


def _client_error(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code", "")), str(err.get("Message", ""))
    cause = exc.__context__ or exc.__cause__
    if isinstance(cause, ClientError):
        return _client_error(cause)
    return type(exc).__name__, str(exc)


def clean_key(key: str) -> str:
    """Keys are relative to the bucket: no leading or trailing slash, no `..` segments."""
    key = key.strip().strip("/")
    if not key or any(part in {"", ".", ".."} for part in key.split("/")):
        raise KoloraError(f"S3 key '{key}' is not a valid object key (empty segment or '..')")
    return key


class S3Store:
    """One bucket on one endpoint, with Argo's artifact layout on top of plain objects."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = make_client(settings)
        self._transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=max(8 * MiB, min(settings.multipart_threshold, 512 * MiB)),
            max_concurrency=4,
        )

    # --- bucket ---------------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Check the endpoint answers (one attempt: a dead endpoint fails in seconds) and create the bucket if missing."""
        self._check_reachable()
        probe = make_client(self.settings, max_attempts=1)
        with s3_errors(self.settings, f"open bucket '{self.bucket}'"):
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

    def _check_reachable(self) -> None:
        """A plain TCP connect first, so a dead endpoint is reported as such even before credentials are looked at."""
        url = urlsplit(self.settings.endpoint_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "", port), timeout=self.settings.connect_timeout).close()
        except OSError as exc:
            reason = (
                "connection refused"
                if isinstance(exc, ConnectionRefusedError)
                else ("no answer before the connect timeout" if isinstance(exc, TimeoutError) else str(exc.strerror or exc))
            )
            raise KoloraError(
                f"{self.settings.label} does not answer ({reason}): start the server or fix --s3-endpoint "
                "(leave it out to use the embedded store)"
            ) from None

    # --- objects --------------------------------------------------------------------------------------------

    def list_keys(self, prefix: str) -> list[str]:
        """All keys starting with `prefix` (a plain string prefix: add '/' yourself for directory semantics)."""
        keys: list[str] = []
        with s3_errors(self.settings, f"list s3://{self.bucket}/{prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys

    def size(self, prefix: str) -> int:
        """Bytes stored under `prefix` (one object or a directory's worth)."""
        total = 0
        with s3_errors(self.settings, f"list s3://{self.bucket}/{prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                total += sum(obj["Size"] for obj in page.get("Contents", []))
        return total

    def exists(self, key: str) -> bool:
        with s3_errors(self.settings, f"look up s3://{self.bucket}/{key}"):
            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
                return True
            except ClientError as exc:
                if _client_error(exc)[0] in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise

    def upload_file(self, path: Path, key: str) -> None:
        with s3_errors(self.settings, f"upload {path} to s3://{self.bucket}/{key}"):
            self._client.upload_file(str(path), self.bucket, key, Config=self._transfer)

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with s3_errors(self.settings, f"download s3://{self.bucket}/{key}"):
            self._client.download_file(self.bucket, key, str(path), Config=self._transfer)

    def put_text(self, key: str, text: str) -> None:
        with s3_errors(self.settings, f"write s3://{self.bucket}/{key}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=text.encode())

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (used to free the embedded store's memory after a run)."""
        keys = self.list_keys(prefix)
        with s3_errors(self.settings, f"delete s3://{self.bucket}/{prefix}"):
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[start : start + 1000]]
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)

    # --- directories and archives ---------------------------------------------------------------------------

    def upload_tree(self, directory: Path, prefix: str) -> list[str]:
        """One object per file under `directory`, at `<prefix>/<relative path>`; returns the keys."""
        prefix = clean_key(prefix)
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            self.upload_file(path, key)
            keys.append(key)
        return keys

    def download_tree(self, prefix: str, directory: Path) -> int:
        """Every object under `<prefix>/` into `directory`, keeping relative paths; returns the file count."""
        prefix = clean_key(prefix)
        count = 0
        for key in self.list_keys(prefix + "/"):
            rel = key[len(prefix) + 1 :]
            if not rel or rel.endswith("/"):
                continue  # folder markers some tools write
            if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
                raise KoloraError(f"refusing S3 object s3://{self.bucket}/{key}: its name leaves the artifact directory")
            self.download_file(key, directory / rel)
            count += 1
        return count

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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
