"""python -m jobs.train --trainset DIR --models DIR --lora DIR [--checkpoints DIR] [--profile P] [--train.steps N ...]

LoRA training on a model directory (fetch-models) and a training set (filter). Writes to --lora:
lora.safetensors (kolora/diffsynth form with rank, alpha and fingerprints), lora_diffusers.safetensors
and lora_kohya.safetensors (load at weight 1.0 for the trained strength), train_log.csv and
train_summary.json; with --train.seed_compat true also seed_compat.json. Resumable states go to
--checkpoints (default: `checkpoints` beside --lora; or --train.checkpoint_dir): rerunning the same
command after a crash continues from the last one. The exact command of the train container; see docs/training.md.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("train", "kolora_core.training.run:run_train", argv)


if __name__ == "__main__":
    sys.exit(main())
