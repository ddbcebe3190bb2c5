"""The `publish-prefix` workflow parameter (the `--prefix` of the champion and promote steps), checked alike by
`kolora run` and `kolora submit` before any step runs: the champion step, which reads `<prefix>/<name>/latest.json`,
runs after ingest and filter, so a prefix no key can carry was found out minutes into the run, with a retry as advice
(which keeps the parameter)."""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import ValidationError

from kolora_core.config import PublishConfig
from kolora_core.errors import KoloraError

PUBLISH_PREFIX_PARAM = "publish-prefix"


def check_publish_prefix(params: dict[str, str]) -> None:
    """`-p publish-prefix` (when given) as `publish.prefix` has it, with no '.' or '..' part."""
    prefix = params.get(PUBLISH_PREFIX_PARAM)
    if prefix is None:
        return
    try:
        PublishConfig(prefix=prefix)
        plain = not any(part in (".", "..") for part in PurePosixPath(prefix).parts)
    except ValidationError:
        plain = False
    if not plain:
        raise KoloraError(
            f"-p {PUBLISH_PREFIX_PARAM}={prefix!r}: give the key prefix of the releases in the bucket, e.g. models "
            "(letters, digits, '.', '_', '-' and '/', starting with a letter or digit; no '.' or '..' parts)"
        )
