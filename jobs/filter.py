"""python -m jobs.filter: run the Data-Juicer recipe `filter.ops` on a `dataset`; write the DiffSynth
training set (`trainset`: train/<i>.png + train/metadata.csv) and `filter-report` (filter_report.json with
images_in/kept/dropped and why each image was dropped, plus a self-contained filter_report.html).

Needs ray and torch importable (Data-Juicer would otherwise pip-install them at run time). See docs/data.md.

    python -m jobs.filter --profile smoke --dataset /tmp/run/dataset --trainset /tmp/run/trainset \\
        --filter-report /tmp/run/filter-report
"""

import sys

from kolora_core.stage_cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("filter", "kolora_core.data.filtering:run_filter", argv)


if __name__ == "__main__":
    sys.exit(main())
