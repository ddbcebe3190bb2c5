"""The publish stage (`jobs/publish.py`): assemble the release directory, and upload it to ModelScope if asked.

It never touches the object store: promotion into `<prefix>/<name>/<version>/` is `promote.py`'s, run by
the workflow's `promote` step (`kolora publish`) or by the local runner after a passing run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kolora_core.config import RunConfig
from kolora_core.release.assemble import assemble_release
from kolora_core.release.modelscope import upload_to_modelscope

log = logging.getLogger("kolora.publish")


def run_publish(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """`publish` stage work: the release directory (and, if configured, the ModelScope upload)."""
    release = assemble_release(
        config.name, config.publish.version, inputs["lora"], inputs["report"], inputs["images"], outputs["release"]
    )
    log.info(
        "release %s %s assembled: %d files, LoRA %s, gate %s (mean aesthetic %s)",
        release["name"],
        release["version"],
        len(release["files"]),
        release["lora_sha256"][:12],
        release["gate"]["result"],
        release["gate"]["mean_aesthetic"],
    )
    if config.publish.modelscope_repo:
        log.info("%s", upload_to_modelscope(outputs["release"], config.publish.modelscope_repo))
