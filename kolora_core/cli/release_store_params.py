"""The key prefix of the releases and the release store's workflow parameters, checked by one rule however given.

`publish-prefix` (the `--prefix` of the champion and promote steps) and `s3-bucket` are checked alike by `kolora run`
and `kolora submit` before any step runs: the champion step, which reads `<bucket>/<prefix>/<name>/latest.json`,
runs after ingest and filter, so a prefix no key can carry or a bucket name S3 refuses was found out minutes into
the run, with a retry as advice (which keeps the parameters). `kolora champion` and `kolora publish` (those steps)
check their `--prefix` by the same rule before they contact the store: they stripped a trailing '/', so `models/`
was taken there and refused everywhere else. The bucket takes the rule of the store the steps are pointed at
(`kolora_core.storage.bucket_names`: GCS's on storage.googleapis.com, which has '_', S3's elsewhere)."""

from __future__ import annotations

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError
from kolora_core.storage.bucket_names import GCS_ENDPOINT, check_bucket_name

PUBLISH_PREFIX_PARAM = "publish-prefix"
S3_BUCKET_PARAM = "s3-bucket"
S3_ENDPOINT_PARAM = "s3-endpoint"


def check_release_store(params: dict[str, str], store_endpoint: str | None, store_named: str) -> None:
    """`-p publish-prefix` and `-p s3-bucket`, where given. The bucket is checked for `-p s3-endpoint`, else for
    `store_endpoint`, the store the steps get without it, said as `store_named` (`kolora run`: its own store, None
    for the embedded one; `kolora submit`: the template's default, which it cannot see: None, S3's rule)."""
    prefix = params.get(PUBLISH_PREFIX_PARAM)
    if prefix is not None:
        check_prefix(prefix, f"-p {PUBLISH_PREFIX_PARAM}={prefix!r}")
    bucket = params.get(S3_BUCKET_PARAM)
    if bucket:
        endpoint = params.get(S3_ENDPOINT_PARAM, store_endpoint)
        where = f"-p {S3_ENDPOINT_PARAM}={endpoint!r}" if S3_ENDPOINT_PARAM in params else store_named
        gcs_fix = f"a GCS bucket takes GCS's rule with -p {S3_ENDPOINT_PARAM}={GCS_ENDPOINT}"
        check_bucket_name(bucket, endpoint, f"-p {S3_BUCKET_PARAM}={bucket!r}", where, gcs_fix)


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
