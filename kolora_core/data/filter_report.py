"""Why each image was dropped, in words, plus filter_report.json's statistics and the self-contained HTML report.

Reasons come from Data-Juicer's own stats (the tracer's `__dj__stats__` of each dropped sample) compared with
the op's limits: the recipe's arguments, else the op's defaults in Data-Juicer 1.6.1 (`OP_LIMITS`). The HTML
needs nothing but a browser: tables, SVG histograms and a contact sheet of base64 JPEG thumbnails.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

# CJK fonts of every desktop system before the generic family: captions and prompts are Chinese, and a
# browser whose default font has no CJK glyphs shows boxes (shared with the evaluation report)
FONT_STACK = (
    'system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", '
    '"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif'
)
THUMB_PX = 96
MAX_THUMBS = 120  # per group (kept / dropped); the report says how many are shown
HIST_BINS = 12

# op -> [(stat key, label, unit, (min arg, default), (max arg, default))]; default None = unbounded
OP_LIMITS: dict[str, list[tuple[str, str, str, tuple[str, float | None], tuple[str, float | None]]]] = {
    "image_shape_filter": [
        ("image_width", "width", " px", ("min_width", 1), ("max_width", None)),
        ("image_height", "height", " px", ("min_height", 1), ("max_height", None)),
    ],
    "image_aspect_ratio_filter": [("aspect_ratios", "aspect ratio (w/h)", "", ("min_ratio", 0.333), ("max_ratio", 3.0))],
    "image_aesthetics_filter": [("image_aesthetics_scores", "aesthetic score", "", ("min_score", 0.5), ("max_score", 1.0))],
    "image_text_similarity_filter": [
        ("image_text_similarity", "image-text similarity", "", ("min_score", 0.1), ("max_score", 1.0))
    ],
    "image_nsfw_filter": [("image_nsfw_score", "NSFW score", "", ("min_score", 0.0), ("max_score", 0.5))],
    "image_watermark_filter": [
        ("image_watermark_prob", "watermark probability", "", ("min_prob", None), ("prob_threshold", 0.8))
    ],
}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def first_value(value: Any) -> Any:
    """Data-Juicer stats hold one value per image of a sample; kolora samples have one image."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def explain_drop(op: str, args: dict[str, Any], stats: dict[str, Any]) -> tuple[str, str]:
    """(rule, reason) from the op's stats and limits, e.g. ("width < min_width 96", "width 64 px < min_width 96").

    The rule groups images dropped for the same cause; the reason carries this image's value.
    """
    rules, reasons = [], []
    for key, label, unit, (min_arg, min_default), (max_arg, max_default) in OP_LIMITS.get(op, []):
        value = first_value(stats.get(key))
        if not isinstance(value, int | float):
            continue
        low, high = args.get(min_arg, min_default), args.get(max_arg, max_default)
        if low is not None and value < low:
            rules.append(f"{label} < {min_arg} {fmt(low)}")
            reasons.append(f"{label} {fmt(value)}{unit} < {min_arg} {fmt(low)}")
        if high is not None and value > high:
            rules.append(f"{label} > {max_arg} {fmt(high)}")
            reasons.append(f"{label} {fmt(value)}{unit} > {max_arg} {fmt(high)}")
    if reasons:
        return "; ".join(rules), "; ".join(reasons)
    shown = ", ".join(f"{k}={fmt(first_value(v))}" for k, v in sorted(stats.items()))
    limits = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(args.items()) if k != "any_or_all")
    return "outside the op's limits", f"{shown or 'no stats'} (limits: {limits or 'op defaults'})"


def describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 3),
    }


def range_text(values: list[float], unit: str = "") -> str:
    d = describe(values)
    if d is None:
        return "none"
    return f"{fmt(float(d['min']))}-{fmt(float(d['max']))}{unit} (median {fmt(float(d['median']))})"


def histogram(kept: list[float], dropped: list[float], bins: int = HIST_BINS) -> dict[str, list]:
    """Shared edges for kept and dropped so the bars stack; integer edges for pixel sizes."""
    values = kept + dropped
    if not values:
        return {"edges": [], "kept": [], "dropped": []}
    lo, hi = min(values), max(values)
    integer = all(float(v).is_integer() for v in values)
    step = (hi - lo) / bins if hi > lo else 1.0
    if integer:
        step = max(1.0, float(int(step) + (step % 1 > 0)))
    edges = [round(lo + i * step, 4) for i in range(bins + 1)]

    def count(vals: list[float]) -> list[int]:
        counts = [0] * bins
        for v in vals:
            counts[min(int((v - lo) / step), bins - 1)] += 1
        return counts

    return {"edges": edges, "kept": count(kept), "dropped": count(dropped)}


def op_stat_ranges(op: str, args: dict[str, Any], dropped_stats: list[dict[str, Any]]) -> str:
    """'widths 256-640 px (median 512) vs min_width 1024, ...' for an op's dropped samples (empty-result errors)."""
    parts = []
    for key, label, unit, (min_arg, min_default), (max_arg, max_default) in OP_LIMITS.get(op, []):
        values = [v for v in (first_value(s.get(key)) for s in dropped_stats) if isinstance(v, int | float)]
        if not values:
            continue
        limits = [
            f"{a} {fmt(args.get(a, d))}"
            for a, d in ((min_arg, min_default), (max_arg, max_default))
            if args.get(a, d) is not None
        ]
        parts.append(f"{label} {range_text([float(v) for v in values], unit)} vs {', '.join(limits)}")
    if not parts:
        keys = sorted({k for s in dropped_stats for k in s})
        for key in keys:
            values = [v for v in (first_value(s.get(key)) for s in dropped_stats) if isinstance(v, int | float)]
            parts.append(f"{key} {range_text([float(v) for v in values])}")
        if args:
            parts.append("limits " + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(args.items())))
    return "; ".join(parts)


# --- HTML ---------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:%s;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:13px}
th{background:#f4f4f4}.num{text-align:right}.big{font-size:28px;font-weight:600;margin-right:28px}
.sheet{display:flex;flex-wrap:wrap;gap:6px}.cell{width:104px;font-size:10px;word-break:break-all}
.cell img{display:block;margin:auto;border:1px solid #ccc;max-width:96px;max-height:96px}
.kept{color:#2a7}.dropped{color:#c33}.note{color:#666;font-size:12px}
"""


def thumbnail_data_uri(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=80)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


HIST_WIDTH, HIST_HEIGHT, HIST_LEFT, HIST_BOTTOM = 560, 160, 44, 46  # plot size and the margins the axes need
CHAR_PX = 6.5  # width of one digit at the axis font size: tick labels never closer than their own width


def _svg_histogram(title: str, hist: dict[str, list]) -> str:
    """Stacked kept/dropped bars with both axes: counts on the left, bin edges below (thinned so labels never overlap)."""
    edges, kept, dropped = hist["edges"], hist["kept"], hist["dropped"]
    if not edges:
        return f"<p>{html.escape(title)}: no data</p>"
    width, height, left = HIST_WIDTH, HIST_HEIGHT, HIST_LEFT
    bins = len(kept)
    bar_w = (width - left) / bins
    top = max((k + d for k, d in zip(kept, dropped, strict=True)), default=1) or 1
    labels = [fmt(float(e)) for e in edges]
    label_px = max(len(t) for t in labels) * CHAR_PX + 8
    shown = list(range(0, len(labels), max(1, math.ceil(label_px / bar_w))))
    if (len(labels) - 1 - shown[-1]) * bar_w >= label_px:
        shown.append(len(labels) - 1)  # the upper end, where it has room
    middle = f"{height / 2:.0f}"
    parts = [
        f'<svg width="{width + 24}" height="{height + HIST_BOTTOM}" role="img" aria-label="{html.escape(title)}" font-size="11">',
        f'<line x1="{left}" y1="{height}" x2="{width}" y2="{height}" stroke="#555"/>',
        f'<line x1="{left}" y1="0" x2="{left}" y2="{height}" stroke="#555"/>',
    ]
    for value, y in ((top, 6), (0, height)):
        parts.append(f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{value}</text>')
    parts.append(f'<text x="10" y="{middle}" text-anchor="middle" transform="rotate(-90 10 {middle})">images</text>')
    for i, (k, d) in enumerate(zip(kept, dropped, strict=True)):
        x = left + i * bar_w
        hk, hd = k / top * (height - 6), d / top * (height - 6)
        for y, h, colour, label in ((height - hk, hk, "#2a7", f"{k} kept"), (height - hk - hd, hd, "#c33", f"{d} dropped")):
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{label}: {labels[i]}-{labels[i + 1]}</title></rect>"
            )
    for i in shown:
        x = left + i * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="{height}" x2="{x:.1f}" y2="{height + 4}" stroke="#555"/>')
        parts.append(f'<text x="{x:.1f}" y="{height + 16}" text-anchor="middle">{labels[i]}</text>')
    parts.append(f'<text x="{left + (width - left) / 2:.0f}" y="{height + 36}" text-anchor="middle">{html.escape(title)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if isinstance(c, int | float) else ""}">{html.escape(str(c))}</td>' for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _sheet(cells: list[tuple[str, str, str | None]]) -> str:
    out = []
    for title, caption, uri in cells:
        img = f'<img src="{uri}" alt="{html.escape(title)}">' if uri else "<div>(no preview)</div>"
        out.append(f'<div class="cell" title="{html.escape(title)}">{img}{html.escape(caption)}</div>')
    return f'<div class="sheet">{"".join(out)}</div>'


def _buckets_section(buckets: dict[str, int] | None) -> str:
    """Kept images per aspect-ratio bucket (`train.buckets`), as the train stage will group them."""
    if not buckets:
        return ""
    return "<h2>Aspect-ratio buckets (train.buckets)</h2>" + _table(
        ["bucket (width x height)", "images"], list(map(list, buckets.items()))
    )


def render_html(report: dict[str, Any], kept_thumbs: list[str | None], dropped_thumbs: list[str | None]) -> str:
    """The whole report as one HTML string; thumbnails are data URIs in the order of kept_images/dropped_images."""
    ops_rows = [
        [o["op"], o["images_in"], o["dropped"], o["images_out"], json.dumps(o.get("args", {}), ensure_ascii=False)]
        for o in report["ops"]
    ]
    reasons = Counter((d["op"], d["rule"]) for d in report["dropped_images"])
    reason_rows = [[op, rule, n] for (op, rule), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    ingest = report.get("ingest", {})
    skip_rows = [[s["original_id"], s["kind"], s["reason"]] for s in ingest.get("skips", [])]
    dims = report["dimensions"]
    dim_rows = []
    for group in ("all", "kept", "dropped"):
        for key in ("width", "height", "aspect_ratio"):
            d = dims.get(group, {}).get(key)
            if d:
                dim_rows.append(
                    [group, key, fmt(float(d["min"])), fmt(float(d["median"])), fmt(float(d["max"])), fmt(float(d["mean"]))]
                )
    kept_cells = [
        (f"{k['file_name']} ({k['original_id']})", f"{k['width']}x{k['height']}", uri)
        for k, uri in zip(report["kept_images"], kept_thumbs, strict=False)
    ]
    dropped_cells = [
        (f"{d['original_id']}: {d['op']}: {d['reason']}", f"{d['op']}: {d['reason']}", uri)
        for d, uri in zip(report["dropped_images"], dropped_thumbs, strict=False)
    ]
    shown = f"showing {len(kept_cells)} of {report['kept']} kept and {len(dropped_cells)} of {report['dropped']} dropped"
    sections = [
        f"<h1>kolora filter report</h1><p><span class='big'>{report['images_in']} in</span>"
        f"<span class='big kept'>{report['kept']} kept</span><span class='big dropped'>{report['dropped']} dropped</span></p>",
        f"<p class='note'>Data-Juicer recipe, np={report['np']}; ingest: {ingest.get('images_read', '?')} read, "
        f"{ingest.get('skipped', 0)} skipped before filtering (listed below).</p>",
        "<h2>Counts per op</h2>" + _table(["op", "in", "dropped", "out", "arguments"], ops_rows),
        "<h2>Why images were dropped</h2>" + (_table(["op", "rule", "images"], reason_rows) if reason_rows else "<p>none</p>"),
        "<h2>Sizes</h2>"
        + _svg_histogram("width (px): kept green, dropped red", report["histograms"]["width"])
        + _svg_histogram("height (px): kept green, dropped red", report["histograms"]["height"])
        + _table(["images", "stat", "min", "median", "max", "mean"], dim_rows),
        _buckets_section(report.get("buckets")),
        f"<h2>Contact sheet</h2><p class='note'>{shown}</p><h3 class='kept'>kept</h3>" + _sheet(kept_cells),
        "<h3 class='dropped'>dropped</h3>" + (_sheet(dropped_cells) if dropped_cells else "<p>none</p>"),
        "<h2>Skipped at ingest</h2>" + (_table(["input", "kind", "reason"], skip_rows) if skip_rows else "<p>none</p>"),
    ]
    return (
        '<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>kolora filter report</title>'
        f"<style>{_CSS % FONT_STACK}</style></head><body>{''.join(sections)}</body></html>\n"
    )
