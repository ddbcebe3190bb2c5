"""python -m jobs.fetch_models --models DIR --scorers DIR [--profile P] [--models.source tiny|modelscope]

Writes the base model directory (Kolors from ModelScope, or tiny random models for smoke runs) and the
scorers directory (the evaluate.aesthetic_repo / clip_repo models from their hubs, or tiny random ones),
each with a manifest of sizes and hashes. The only step that downloads weights.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("fetch-models", "kolora_core.models.fetch:run_fetch_models", argv)


if __name__ == "__main__":
    sys.exit(main())
