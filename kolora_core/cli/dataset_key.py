"""The `dataset-key` workflow parameter (docs/argo.md "Your own images"), checked alike by `kolora run` and
`kolora submit`, so a key that runs locally is one a cluster reads the same way."""

from __future__ import annotations

from kolora_core.errors import KoloraError
from workflows.options import DATASET_KEY_PARAM


def check_dataset_key(params: dict[str, str]) -> None:
    """`-p dataset-key` is an object key prefix: refused when it is a URL, a path or padded (Argo would look it up,
    find nothing and skip the optional artifact; the stage then fails on the cluster), and a trailing '/' is dropped
    (Argo first fetches the key as one object, so a folder marker there would arrive as an empty file)."""
    key = params.get(DATASET_KEY_PARAM)
    if not key:
        return
    if key != key.strip() or "://" in key or key.startswith(("/", "./", "../")) or ".." in key.split("/"):
        raise KoloraError(
            f"-p {DATASET_KEY_PARAM}={key!r}: give the key prefix inside the artifact repository's bucket, e.g. "
            f"datasets/<name> for s3://<bucket>/datasets/<name>/ (no scheme, bucket, leading '/', '..' or spaces)"
        )
    params[DATASET_KEY_PARAM] = key.rstrip("/")
    if params.get("dataset"):
        raise KoloraError(f"give -p dataset or -p {DATASET_KEY_PARAM}, not both (the run reads the key's images)")
