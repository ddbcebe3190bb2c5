"""The object stores' own errors, apart from `s3` so that code using only `LocalStorage` imports no boto3
(a GPU machine running the stages and the benchmarks has none)."""

from __future__ import annotations

from kolora_core.errors import KoloraError


class ArtifactNotFound(KoloraError):
    """No object and no prefix at the key: the producing step did not upload it (or it is optional)."""


class PreconditionFailed(KoloraError):
    """A conditional write lost: the key exists (put_if_absent) or changed since it was read (put_if_match)."""
