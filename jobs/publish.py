"""python -m jobs.publish --lora DIR --report DIR --images DIR --release DIR [--publish.version V] [--publish.modelscope_repo R]

Assembles the release directory (LoRA + exports, report.json, report.html, grid.png, the story images with
generations.jsonl, release.json) of a LoRA whose evaluation gate passed, and refuses otherwise. The
workflow uploads the directory to `<publish.prefix>/<name>/<version>/` and then `latest.json` with
`kolora_core.release.promote`; this stage knows nothing of S3. The exact command of the publish container.
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("publish", "kolora_core.release.run:run_publish", argv)


if __name__ == "__main__":
    sys.exit(main())
