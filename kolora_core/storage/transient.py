"""Which S3 failures a retry may not repeat (exit 75, `TransientError`) and which it would (exit 2, `KoloraError`).

Why botocore decides: its standard retry mode already classified each failed request, attempt by attempt, to
decide whether to try again (HTTP 500/502/503/504, codes such as SlowDown, Throttling and RequestTimeout, a
connection refused, reset or timed out). A failure still standing after the last attempt is of the same kind,
and the workflow's pod retry, 30 s and 60 s later, may get through. What botocore never retries (403
AccessDenied, 404 NoSuchBucket, 400 and other 4xx) repeats on every attempt: a user error. Asking botocore's
own checkers keeps the two in step: kolora calls transient exactly what botocore retried.

The few exceptions are listed below with their reasons.
"""

from __future__ import annotations

import socket

from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.awsrequest import AWSResponse
from botocore.exceptions import BotoCoreError, ClientError, SSLError
from botocore.retries.standard import OrRetryChecker, RetryContext, ThrottledRetryableChecker, TransientRetryableChecker

# The S3-relevant half of botocore's StandardRetryConditions: its other checkers are the S3 model's retryable
# errors (S3 models none) and special cases of STS and DynamoDB.
_BOTOCORE_RETRIES = OrRetryChecker([TransientRetryableChecker(), ThrottledRetryableChecker()])
# Listed by hand: 429 Too Many Requests (RFC 6585: slow down and retry) is retried by botocore's standard mode only
# in recent versions (ThrottlingStatusCodeChecker), not in all that kolora's boto3>=1.34 allows.
TOO_MANY_REQUESTS = 429
# Listed by hand: a DeleteObjects answer names per-key failures by code alone, without an HTTP status, so botocore's
# status rule cannot see them; these are the S3 error codes whose status (S3 API reference, "Error codes") it retries.
SERVER_ERROR_STATUS = {"InternalError": 500, "ServiceUnavailable": 503, "SlowDown": 503}


def is_transient(exc: BaseException) -> bool:
    """Whether a retry later may succeed where `exc` failed (botocore's verdict, see the module docstring)."""
    if isinstance(exc, RetriesExceededError):
        return True  # s3transfer gave up on a body stream that broke each time: the kinds it retries are transient
    if isinstance(exc, S3UploadFailedError):  # boto3 wraps a ClientError of the upload, raised in its `except`
        cause = exc.__cause__ or exc.__context__
        return cause is not None and is_transient(cause)
    if isinstance(exc, SSLError):
        # botocore retries it as a connection error, but a certificate or TLS mismatch (https:// to an http port,
        # an unknown CA) fails the same way every time: fix --s3-endpoint or the CA bundle
        return False
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        http = AWSResponse("", status, {}, None) if isinstance(status, int) else None
        context = RetryContext(attempt_number=1, parsed_response=exc.response, http_response=http)
        return status == TOO_MANY_REQUESTS or bool(_BOTOCORE_RETRIES.is_retryable(context))
    if isinstance(exc, BotoCoreError):
        if name_not_known(exc):
            return False  # DNS answered that the endpoint's host does not exist: a wrong URL, not a blip
        return bool(_BOTOCORE_RETRIES.is_retryable(RetryContext(attempt_number=1, caught_exception=exc)))
    return False


def is_transient_code(code: str) -> bool:
    """The same verdict for an S3 error code without an HTTP status (a DeleteObjects answer's per-key errors)."""
    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": SERVER_ERROR_STATUS.get(code)}}
    return is_transient(ClientError(response, "DeleteObjects"))


def name_not_known(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps: urllib3's error, its socket error) is DNS's "no such host" (EAI_NONAME).

    A temporary DNS failure (EAI_AGAIN, a resolver that timed out) is not: a retry may resolve it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return current.errno in {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        error = getattr(current, "kwargs", {}).get("error") if isinstance(current, BotoCoreError) else None
        todo += [current.__cause__, current.__context__, error if isinstance(error, BaseException) else None]
    return False
