"""The report directory's file names (evaluate writes them; publish, the champion and check-changes read them).

Kept apart from `run.py` so that the release and the `kolora champion` command can name these files without
importing the scorers (and torch).
"""

from __future__ import annotations

GRID = "grid.png"
REPORT = "report.json"
REPORT_HTML = "report.html"
GATE = "gate.txt"
MEAN_AESTHETIC = "mean_aesthetic.txt"  # the workflow's `mean-aesthetic` output (metrics, notify); empty when not scored
