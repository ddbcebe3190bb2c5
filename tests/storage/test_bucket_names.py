"""Bucket names by the store's own rule: GCS's on storage.googleapis.com ('_', dotted names up to 222), S3's elsewhere."""

from __future__ import annotations

import pytest

from kolora_core.errors import KoloraError
from kolora_core.storage.bucket_names import GCS_RULE, S3_RULE, bucket_rule, check_bucket_name

DOTTED_222 = ".".join(["a" * 63] * 3) + ".a" + "b" * 29  # 222 characters, no part over 63


@pytest.mark.parametrize(
    "endpoint",
    ["https://storage.googleapis.com", "https://storage.googleapis.com/", "http://storage.googleapis.com:443"],
)
def test_a_gcs_endpoint_takes_gcs_rule(endpoint: str) -> None:
    assert bucket_rule(endpoint) is GCS_RULE


@pytest.mark.parametrize(
    "endpoint",
    [None, "", "http://127.0.0.1:8333", "http://minio:9000", "https://s3.eu-west-1.amazonaws.com",
     "https://acct.r2.cloudflarestorage.com", "https://storage.googleapis.com.example.org"],
)  # fmt: skip
def test_every_other_store_takes_s3_rule(endpoint: str | None) -> None:
    """The embedded store (None), AWS (''), MinIO, R2, and a host that only starts like GCS's."""
    assert bucket_rule(endpoint) is S3_RULE


@pytest.mark.parametrize("bucket", ["my_team_bucket", "a_b", "team.kolora_runs", "r" * 63, DOTTED_222, "0-9_x"])
def test_gcs_takes_underscores_and_long_dotted_names(bucket: str) -> None:
    assert len(DOTTED_222) == 222 and GCS_RULE.allows(bucket)


@pytest.mark.parametrize(
    "bucket", ["ab", "r" * 64, DOTTED_222 + "c", "a." + "b" * 64, "_ab", "ab_", "a..b", "My_Team", "team bucket", "a.b-"]
)
def test_gcs_refuses_what_its_rule_refuses(bucket: str) -> None:
    """3-63 characters without dots, parts of at most 63 and 222 in all with them, starting and ending alphanumeric."""
    assert not GCS_RULE.allows(bucket)


@pytest.mark.parametrize("bucket", ["my_team_bucket", DOTTED_222, "ab", "Kolora", "-kolora"])
def test_s3_keeps_its_strict_rule(bucket: str) -> None:
    assert not S3_RULE.allows(bucket) and S3_RULE.allows("team-a.releases")


def test_the_refusal_is_one_line_naming_the_rule_that_applied() -> None:
    given = "--bucket 'my_team_bucket'"
    check_bucket_name("my_team_bucket", "https://storage.googleapis.com", given, "GCS")
    with pytest.raises(KoloraError) as refused:
        check_bucket_name("my_team_bucket", "http://minio:9000", given, "--s3-endpoint http://minio:9000", "use GCS's")
    assert str(refused.value) == (
        "--bucket 'my_team_bucket' is not an S3 bucket name (S3's rule, for --s3-endpoint http://minio:9000): use 3-63 "
        "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit; use GCS's"
    )
    with pytest.raises(KoloraError, match=r"^x is not a GCS bucket name \(GCS's rule, for GCS\): use 3-63 [^;]*$"):
        check_bucket_name("My_Team", "https://storage.googleapis.com", "x", "GCS", "never said: GCS refused it")
    with pytest.raises(KoloraError, match=r"letter or digit$"):  # S3 refused a name GCS refuses too: no GCS advice
        check_bucket_name("ab", None, "x", "the embedded store", "use GCS's")
