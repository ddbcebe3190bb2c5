"""The release store's workflow parameters, `publish-prefix` (the `--prefix` of the champion and promote steps) and
`s3-bucket`, checked alike by `kolora run` and `kolora submit` before any step runs: the champion step, which reads
`<bucket>/<prefix>/<name>/latest.json`, runs after ingest and filter, so a prefix no key can carry or a bucket name
S3 refuses was found out minutes into the run, with a retry as advice (which keeps the parameters)."""

from __future__ import annotations

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError
from kolora_core.storage.embedded import BUCKET_NAME, BUCKET_RULE

PUBLISH_PREFIX_PARAM = "publish-prefix"
S3_BUCKET_PARAM = "s3-bucket"


def check_release_store(params: dict[str, str]) -> None:
    """`-p publish-prefix` and `-p s3-bucket`, where given."""
    _check_publish_prefix(params.get(PUBLISH_PREFIX_PARAM))
    bucket = params.get(S3_BUCKET_PARAM)
    if bucket and not BUCKET_NAME.fullmatch(bucket):
        raise KoloraError(f"-p {S3_BUCKET_PARAM}={bucket!r} is not an S3 bucket name: {BUCKET_RULE}")


def _check_publish_prefix(prefix: str | None) -> None:
    """`publish.prefix`'s own rule (`PublishConfig`: no empty, '.' or '..' part), said as the -p parameter."""
    if prefix is None:
        return
    try:
        PublishConfig(prefix=prefix)
    except ValidationError:
        raise KoloraError(
            f"-p {PUBLISH_PREFIX_PARAM}={prefix!r}: give the key prefix of the releases in the bucket, e.g. models "
            "(letters, digits, '.', '_', '-' and '/', starting with a letter or digit; no empty, '.' or '..' parts)"
        ) from None
