"""The summary says what ingest skipped, read from ingest's own record: the dist ingest template on the real stage.

A user who reads only the summary must not think every image was used: a run whose ingest skipped images or files
shows the counts and the file that lists each skip; a run with no skips shows nothing new (README's quick start);
a record that is not what ingest writes gets one note, never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kolora_core.data.filtering import INGEST_KEYS
from kolora_core.data.layout import INGEST_REPORT
from kolora_core.runner.summary import build_summary
from tests.data.conftest import build_bad_folder

from .conftest import ingest_only


@pytest.fixture
def skipped_run(run: Any, tmp_path: Path) -> tuple[Any, dict]:
    """The dist ingest template on a folder holding every bad kind; the run and ingest's report."""
    folder = build_bad_folder(tmp_path / "bad")
    result, console = run(ingest_only(tmp_path), parameters={"profile": "smoke", "dataset": str(folder), "caption": "null"})
    assert result.ok, console
    report = json.loads((result.run_dir / "ingest" / "dataset" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert report["skipped"] and report["problems"]
    return result, report


def _head(report: dict) -> str:
    return f"ingest  images_read {report['images_read']}  kept {report['kept']}  skipped {report['skipped']}"


def _ingest_lines(summary: str) -> list[str]:
    """The summary's ingest line and the one after it."""
    lines = summary.splitlines()
    at = next((n for n, line in enumerate(lines) if line.startswith("ingest  ")), None)
    assert at is not None, summary
    return lines[at : at + 2]


def test_the_summary_shows_what_ingest_skipped_and_where_the_list_is(skipped_run: tuple[Any, dict]) -> None:
    result, report = skipped_run
    line, where = _ingest_lines(result.summary)
    assert line.startswith(f"{_head(report)}  other files not used {report['problems']}  ("), line
    assert f"{report['skipped_by_kind']['missing_caption']} missing_caption" in line
    assert where.startswith("  skipped inputs and why: ") and where.endswith(f"ingest/dataset/{INGEST_REPORT}"), where
    assert (result.run_dir / "summary.txt").read_text(encoding="utf-8") == result.summary


def test_no_skips_no_ingest_line(run: Any, tmp_path: Path) -> None:
    """The smoke data (what README's quick start shows) has no skips: the summary stays as it was."""
    result, console = run(ingest_only(tmp_path), parameters={"profile": "smoke"})
    assert result.ok, console
    report = json.loads((result.run_dir / "ingest" / "dataset" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert (report["skipped"], report["problems"]) == (0, 0)
    assert "\ningest  " not in result.summary and INGEST_REPORT not in result.summary, result.summary


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"images_read": "20", "kept": 10, "skipped": 10, "problems": 0}',
        '{"images_read": 20, "kept": 10, "skipped": -1, "problems": 0}',
        '{"images_read": 20, "kept": 10, "skipped": true, "problems": 0}',
        '{"images_read": 20, "kept": 10}',
        "\xff\xfe",
        "[" * 100_000,
    ],
    ids=lambda text: text[:40],
)
def test_a_record_that_is_not_ingests_gets_one_note(skipped_run: tuple[Any, dict], text: str) -> None:
    result, _ = skipped_run
    (result.run_dir / "ingest" / "dataset" / INGEST_REPORT).write_text(text, encoding="latin-1")
    line, _ = _ingest_lines(build_summary(result))
    assert line.endswith(f"ingest/dataset/{INGEST_REPORT} holds no ingest counts: what ingest skipped is not shown"), line
    assert build_summary(result).count(INGEST_REPORT) == 1


def test_kinds_that_are_not_counts_are_left_out(skipped_run: tuple[Any, dict]) -> None:
    result, report = skipped_run
    path = result.run_dir / "ingest" / "dataset" / INGEST_REPORT
    path.write_text(json.dumps({**report, "skipped_by_kind": {"corrupt": "many", "truncated": 2}}), encoding="utf-8")
    line, _ = _ingest_lines(build_summary(result))
    assert line == f"{_head(report)}  other files not used {report['problems']}  (2 truncated)"
    path.write_text(json.dumps({**report, "skipped_by_kind": ["corrupt"]}), encoding="utf-8")
    line, _ = _ingest_lines(build_summary(result))
    assert line == f"{_head(report)}  other files not used {report['problems']}"


def test_a_dataset_left_in_the_store_is_told_by_the_filter_reports_copy(skipped_run: tuple[Any, dict]) -> None:
    """A dataset over --collect-max-gb stays in the store: the filter report (flattened to runs/<id>/) keeps ingest's
    counts under `ingest`, as the filter stage copies them."""
    result, report = skipped_run
    (result.run_dir / "ingest" / "dataset" / INGEST_REPORT).unlink()
    assert "\ningest  " not in build_summary(result)
    ingest = {k: report[k] for k in INGEST_KEYS if k in report}
    filter_report = result.run_dir / "filter_report.json"
    filter_report.write_text(json.dumps({"images_in": report["kept"], "kept": 1, "dropped": 0, "ingest": ingest}))
    line, where = _ingest_lines(build_summary(result))
    assert line.startswith(_head(report)) and where.endswith("filter_report.json"), (line, where)
