"""python -m jobs.ingest: read `ingest.source`, normalise, caption and de-duplicate into a `dataset` directory.

Sources: modelscope://<id>, a local folder of images (metadata.csv/jsonl or .txt captions), a .parquet
file/folder, or smoke:// (a small generated dataset). Output layout: kolora_core/data/layout.py; every
skipped input and its reason is in ingest_report.json. See docs/data.md.

    python -m jobs.ingest --profile smoke --dataset /tmp/run/dataset
    python -m jobs.ingest --source ./my-images --dataset /tmp/run/dataset   # a folder instead of ingest.source
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("ingest", "kolora_core.data.ingest:run_ingest", argv)


if __name__ == "__main__":
    sys.exit(main())
