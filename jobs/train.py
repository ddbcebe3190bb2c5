"""python -m jobs.train --trainset DIR --models DIR --lora DIR [--profile P] [--train.steps N ...]

LoRA training on a model directory (fetch-models) and a training set (filter); writes lora.safetensors,
train_log.csv and train_summary.json. The exact command of the train container.
"""

import sys

from kolora_core.stage_cli import stage_main
from kolora_core.training.run import run_train


def main(argv: list[str] | None = None) -> int:
    return stage_main("train", run_train, argv)


if __name__ == "__main__":
    sys.exit(main())
