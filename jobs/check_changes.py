"""python -m jobs.check_changes --trainset DIR --champion DIR --changes DIR

Writes changes/training.txt (`changed` | `unchanged`: the workflow's `training` parameter, which lets the
nightly skip train when nothing changed) and changes/changes.json (why: which fingerprint differs from the
champion's release). The exact command of the check-changes container.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("check-changes", "kolora_core.release.changes:run_check_changes", argv)


if __name__ == "__main__":
    sys.exit(main())
