"""python -m jobs.fetch_models --models DIR --scorers DIR [--profile P] [--models.source tiny|modelscope]

Writes the base model directory (Kolors from ModelScope, or tiny random models for smoke runs) and the
scorers directory (the evaluate.aesthetic_repo / clip_repo models from their hubs, or tiny random ones),
each with a manifest of sizes and hashes. The only step that downloads weights.
"""

import sys
from pathlib import Path

from kolora_core.config import RunConfig
from kolora_core.models.fetch import fetch_models, fetch_scorers
from kolora_core.stage_cli import stage_main


def _fetch(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    fetch_models(config.models, outputs["models"])
    fetch_scorers(config.evaluate, config.models, outputs["scorers"])


def main(argv: list[str] | None = None) -> int:
    return stage_main("fetch-models", _fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
