"""python -m jobs.evaluate --images DIR --lora DIR --filter-report DIR --scorers DIR --report DIR [--evaluate.grid_width W ...]

Writes the seed's 2x4 story grid (grid.png), report.json and gate.txt (the workflow's gate parameter).
The exact command of the evaluate container.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", "kolora_core.evaluation.run:run_evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
