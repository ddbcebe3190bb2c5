"""The key prefix of the releases and the release store's workflow parameters, checked by one rule however given.

`publish-prefix` (the `--prefix` of the champion and promote steps) and `s3-bucket` are checked alike by `kolora run`
and `kolora submit` before any step runs: the champion step, which reads `<bucket>/<prefix>/<name>/latest.json`,
runs after ingest and filter, so a prefix no key can carry or a bucket name S3 refuses was found out minutes into
the run, with a retry as advice (which keeps the parameters). `kolora champion` and `kolora publish` (those steps)
check their `--prefix` by the same rule before they contact the store: they stripped a trailing '/', so `models/`
was taken there and refused everywhere else."""

from __future__ import annotations

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError
from kolora_core.storage.embedded import BUCKET_NAME, BUCKET_RULE

PUBLISH_PREFIX_PARAM = "publish-prefix"
S3_BUCKET_PARAM = "s3-bucket"


def check_release_store(params: dict[str, str]) -> None:
    """`-p publish-prefix` and `-p s3-bucket`, where given."""
    prefix = params.get(PUBLISH_PREFIX_PARAM)
    if prefix is not None:
        check_prefix(prefix, f"-p {PUBLISH_PREFIX_PARAM}={prefix!r}")
    bucket = params.get(S3_BUCKET_PARAM)
    if bucket and not BUCKET_NAME.fullmatch(bucket):
        raise KoloraError(f"-p {S3_BUCKET_PARAM}={bucket!r} is not an S3 bucket name: {BUCKET_RULE}")


def check_prefix(prefix: str, given_as: str) -> None:
    """`publish.prefix`'s own rule (`PublishConfig`: no empty, '.' or '..' part), said as the flag or parameter
    `given_as` that gave `prefix`."""
    try:
        PublishConfig(prefix=prefix)
    except ValidationError:
        raise KoloraError(
            f"{given_as}: give the key prefix of the releases in the bucket, e.g. models "
            "(letters, digits, '.', '_', '-' and '/', starting with a letter or digit; no empty, '.' or '..' parts)"
        ) from None
