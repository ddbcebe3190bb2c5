"""The `dataset-key` workflow parameter (docs/argo.md "Your own images"), checked alike by `kolora run`,
`kolora submit` and `kolora upload`, so a key that runs locally is one a cluster reads the same way."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kolora_core.errors import KoloraError, name_some
from kolora_core.relative_names import is_relative_name
from workflows.options import DATASET_KEY_PARAM

if TYPE_CHECKING:  # a type only: `kolora submit` checks keys without talking to a store
    from kolora_core.storage.s3 import S3Store


def clean_dataset_key(key: str, what: str) -> str:
    """An object key prefix, refused when it is a URL, a path, padded or has an empty, '.' or '..' part (Argo would
    look it up, find nothing and skip the optional artifact; the stage then fails on the cluster); a trailing '/' is
    dropped (Argo first fetches the key as one object, so a folder marker there would arrive as an empty file).
    `what` names it in the refusal."""
    if key != key.strip() or not is_relative_name(key.rstrip("/")):  # a URL has an empty part: s3://bucket
        raise KoloraError(
            f"{what}={key!r}: give the key prefix inside the artifact repository's bucket, e.g. "
            f"datasets/<name> for s3://<bucket>/datasets/<name>/ (no scheme, bucket, leading '/', empty or '..' parts, "
            "or surrounding spaces)"
        )
    return key.rstrip("/")


def check_dataset_key(params: dict[str, str]) -> None:
    """`-p dataset-key` as `clean_dataset_key` has it ('' = none), and not together with `-p dataset`."""
    key = params.get(DATASET_KEY_PARAM)
    if not key:
        return
    params[DATASET_KEY_PARAM] = clean_dataset_key(key, f"-p {DATASET_KEY_PARAM}")
    if params.get("dataset"):
        raise KoloraError(f"give -p dataset or -p {DATASET_KEY_PARAM}, not both (the run reads the key's images)")


def check_dataset_key_stored(store: S3Store, params: Mapping[str, str]) -> None:
    """Refuse `-p dataset-key` with nothing stored under it, naming the keys beside it that are: a mistyped key
    otherwise starts the run and fails in ingest (Argo skips an optional artifact it does not find)."""
    key = params.get(DATASET_KEY_PARAM)
    if not key or store.has_artifact(key):
        return
    parent = key.rsplit("/", 1)[0] if "/" in key else ""
    siblings = sorted({k[len(parent) + 1 :].split("/", 1)[0] for k in store.list_keys(f"{parent}/")}) if parent else []
    near = [f"{parent}/{name}" for name in difflib.get_close_matches(key.rsplit("/", 1)[-1], siblings, n=3)]
    hint = f" ({parent}/ holds {name_some(siblings, 5)})" if siblings else ""
    if near:
        hint = f" (did you mean {' or '.join(near)}?)"
    raise KoloraError(
        f"-p {DATASET_KEY_PARAM}={key}: nothing is stored under s3://{store.bucket}/{key}/ on {store.settings.label}{hint}: "
        f"give a stored key, or upload the folder first with `kolora upload FOLDER {key}` (the same --runs-dir or "
        "--s3-endpoint as the run)"
    )
