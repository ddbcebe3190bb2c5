"""filter_report.html's histograms: both axes labelled, bin-edge labels never drawn over each other."""

from __future__ import annotations

import itertools
import re

import pytest

from kolora_core.data.filter_report import CHAR_PX, HIST_HEIGHT, _svg_histogram, histogram


@pytest.mark.parametrize(
    "values",
    [
        [1024.0 + 37 * i for i in range(40)] + [123456.0],  # wide integer labels
        [0.3333 + 0.0917 * i for i in range(30)],  # four significant digits
        [512.0, 1024.0],
    ],
)
def test_axis_labels_do_not_overlap(values: list[float]) -> None:
    hist = histogram(values[1:], values[:1])
    svg = _svg_histogram("width (px)", hist)
    ticks = re.findall(rf'<text x="([\d.]+)" y="{HIST_HEIGHT + 16}" text-anchor="middle">([^<]+)</text>', svg)
    assert len(ticks) >= 2, svg
    for (x1, a), (x2, b) in itertools.pairwise(ticks):
        assert float(x2) - float(x1) >= (len(a) + len(b)) / 2 * CHAR_PX, (a, b)
    top = max(k + d for k, d in zip(hist["kept"], hist["dropped"], strict=True))
    assert ">images</text>" in svg and f'text-anchor="end">{top}</text>' in svg and 'text-anchor="end">0</text>' in svg
