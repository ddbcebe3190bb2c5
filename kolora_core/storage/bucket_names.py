"""Which bucket names a store takes, decided by its endpoint: GCS's rule on storage.googleapis.com, S3's elsewhere.

Why two rules: a name is refused before anything starts (the embedded store, `-p s3-bucket` of `kolora run` and
`kolora submit`, the chart's `s3.bucket`), so the rule must be the store's own, or a valid bucket is refused.
AWS S3 general-purpose buckets take 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter
or digit (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html; no '_' outside legacy
us-east-1 buckets since 2018); MinIO and SeaweedFS (the embedded store) enforce the same. Google Cloud Storage also
takes '_', and names with dots of up to 222 characters whose dot-separated parts are 63 at most
(https://cloud.google.com/storage/docs/buckets#naming), so a GCS team's existing 'my_team_bucket' is a bucket
there. An endpoint kolora does not know (`kolora submit` without `-p s3-endpoint`: the template's) takes S3's rule.
The finer points either store refuses itself (an IP-address form, reserved prefixes such as 'xn--' or 'goog')
are left to it: they are rare and its own error names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kolora_core.errors import KoloraError

GCS_HOST = "storage.googleapis.com"  # GCS's S3-interoperable XML API (HMAC keys)
GCS_ENDPOINT = "https://" + GCS_HOST


@dataclass(frozen=True)
class BucketRule:
    """One store's bucket names: `pattern` (a full match) of at most `max_length` characters, said as `text`."""

    store: str
    called: str  # "an S3 bucket name"
    pattern: re.Pattern[str]
    max_length: int
    text: str

    def allows(self, bucket: str) -> bool:
        return len(bucket) <= self.max_length and self.pattern.fullmatch(bucket) is not None


S3_RULE = BucketRule(
    store="S3",
    called="an S3 bucket name",
    pattern=re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    max_length=63,
    text="use 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
)
GCS_RULE = BucketRule(
    store="GCS",
    called="a GCS bucket name",
    # no dots: 3-63 characters; with dots: parts of 1-63 characters, 222 in all (`max_length`)
    pattern=re.compile(
        r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]|[a-z0-9][a-z0-9_-]{0,62}(\.[a-z0-9_-]{1,63})*\.[a-z0-9_-]{0,62}[a-z0-9]"
    ),
    max_length=222,
    text="use 3-63 lowercase letters, digits, '_', '-' and '.' (up to 222 with dots, at most 63 between two), "
    "starting and ending with a letter or digit",
)


def is_gcs_endpoint(endpoint_url: str | None) -> bool:
    """An S3 endpoint URL on Google Cloud Storage (None: the embedded store; '': AWS S3)."""
    return urlsplit(endpoint_url or "").hostname == GCS_HOST


def bucket_rule(endpoint_url: str | None) -> BucketRule:
    """The rule of the store at `endpoint_url`: GCS's on storage.googleapis.com, S3's for any other (AWS, MinIO, ...)."""
    return GCS_RULE if is_gcs_endpoint(endpoint_url) else S3_RULE


def check_bucket_name(bucket: str, endpoint_url: str | None, given_as: str, where: str, gcs_fix: str = "") -> None:
    """Raise a one-line `KoloraError` when the store at `endpoint_url` (said as `where`) refuses `bucket`, given as
    `given_as`; `gcs_fix`, where S3's rule refused a name GCS takes, says how to point the command at GCS instead."""
    rule = bucket_rule(endpoint_url)
    if rule.allows(bucket):
        return
    fix = f"; {gcs_fix}" if gcs_fix and rule is S3_RULE and GCS_RULE.allows(bucket) else ""
    raise KoloraError(f"{given_as} is not {rule.called} ({rule.store}'s rule, for {where}): {rule.text}{fix}")
