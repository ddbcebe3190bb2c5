"""How a person's shell names a store: the flags of kolora's store commands, for advice that can be followed as printed.

Why this exists: a step of `kolora run` reaches the embedded store through `--s3-endpoint http://127.0.0.1:<port>`,
a port that is gone when the run ends, so a step that advises a command (the champion step, about a damaged
champion) cannot derive the user's flags from its own. The local runner therefore tells every step, in the
environment variable `STORE_FLAGS_ENV`, the flags that reach the same store from the shell it was started in
(`--runs-dir runs`); on a cluster nothing sets it and the step's own `--s3-endpoint`/`--bucket`/`--region` are
the answer.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from kolora_core.storage.s3 import DEFAULT_BUCKET

STORE_FLAGS_ENV = "KOLORA_STORE_FLAGS"
DEFAULT_RUNS_DIR = Path("runs")


def embedded_flags(runs_dir: Path, bucket: str = DEFAULT_BUCKET) -> list[str]:
    """The flags of `kolora run`'s embedded store under `runs_dir` (the bucket only where it is not the default)."""
    return ["--runs-dir", str(runs_dir), *([] if bucket == DEFAULT_BUCKET else ["--bucket", bucket])]


def endpoint_flags(endpoint: str, bucket: str, region: str | None = None) -> list[str]:
    """The flags of an S3 endpoint ('' = AWS S3 of the region)."""
    return ["--s3-endpoint", endpoint, "--bucket", bucket, *(["--region", region] if region else [])]


def hinted_flags() -> list[str] | None:
    """The flags the local runner handed this step (`STORE_FLAGS_ENV`), or None outside `kolora run`."""
    value = os.environ.get(STORE_FLAGS_ENV, "").strip()
    return shlex.split(value) if value else None
