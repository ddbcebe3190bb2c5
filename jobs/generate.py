"""python -m jobs.generate --models DIR --lora DIR --images DIR [--progress DIR] [--generate.shards N --generate.shard I ...]

Renders the story prompts (this shard's share) with the trained LoRA; writes NNN.png with their
settings in PNG metadata, and generations.jsonl. Each finished image is kept in --progress (default:
`progress` beside --images) as it completes, so a rerun after a crash renders only what is missing.
The exact command of the generate container.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("generate", "kolora_core.inference.run:run_generate", argv)


if __name__ == "__main__":
    sys.exit(main())
