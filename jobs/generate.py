"""python -m jobs.generate --models DIR --lora DIR --images DIR [--generate.shards N --generate.shard I ...]

Renders the story prompts (this shard's share) with the trained LoRA; writes NNN.png with their
settings in PNG metadata, and generations.jsonl. The exact command of the generate container.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("generate", "kolora_core.inference.run:run_generate", argv)


if __name__ == "__main__":
    sys.exit(main())
