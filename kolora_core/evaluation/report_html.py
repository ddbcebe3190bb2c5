"""report.html: one self-contained page (images inlined as JPEG data URIs) a person opens to judge the run."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

VERDICT_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#9a6700"}
THUMB = 512
GRID_MAX = 2048


def data_uri(image: Image.Image, max_side: int) -> str:
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _stats_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, label in (("aesthetic", "aesthetic score"), ("clip_similarity", "CLIP similarity")):
        score = report["scores"][key]
        stats = score.get("stats")
        if score["status"] != "scored" or not stats:
            rows.append((label, f"not scored: {score['reason']}"))
            continue
        rows.append((label, " · ".join(f"{k} {stats[k]:.3f}" for k in ("mean", "min", "max", "std"))))
    return rows


def render_report_html(
    report: dict[str, Any], grid: Image.Image, images: dict[int, Image.Image], extra_sections: str = ""
) -> str:
    """The page; `extra_sections` is trusted HTML appended at the end (the samples-during-training section)."""
    gate = report["gate"]
    colour = VERDICT_COLOURS.get(gate["result"], "#57606a")
    settings = report.get("settings", {})
    cards = []
    for entry in report["images"]:
        failures = "".join(f"<li>{html.escape(f)}</li>" for f in entry.get("failures", []))
        details = _table(
            [
                ("seed", entry["seed"]),
                ("aesthetic", entry.get("aesthetic")),
                ("CLIP similarity", entry.get("clip_similarity")),
                ("cfg / steps", f"{entry.get('cfg_scale')} / {entry.get('steps')}"),
                ("size", f"{entry.get('width')}×{entry.get('height')}"),
                ("LoRA strength", entry.get("lora_strength")),
                ("seconds", entry.get("seconds")),
            ]
        )
        status = f'<ul class="fail">{failures}</ul>' if failures else ""
        cards.append(
            f'<figure class="card{" failed" if failures else ""}">'
            f'<img src="{data_uri(images[entry["index"]], THUMB)}" alt="image {entry["index"]}">'
            f"<figcaption><b>#{entry['index']}</b> {html.escape(entry['prompt'])}"
            f'<div class="neg">negative: {html.escape(entry.get("negative_prompt") or "—")}</div>'
            f"{details}{status}</figcaption></figure>"
        )
    training = report.get("training", {})
    facts = _table(
        [
            ("base model", settings.get("base_model")),
            ("engine", settings.get("engine")),
            ("LoRA sha256", training.get("lora_sha256")),
            ("rank / alpha", f"{training.get('rank')} / {training.get('alpha')}"),
            ("training", ", ".join(f"{k} {v}" for k, v in training.items() if k in ("steps", "final_loss")) or None),
            ("data", ", ".join(f"{k} {v}" for k, v in report.get("data", {}).items()) or None),
        ]
    )
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>kolora report: {html.escape(gate["result"])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}}
.verdict{{background:{colour};color:#fff;padding:1rem 1.5rem;border-radius:8px;font-size:1.3rem}}
.verdict small{{display:block;font-size:.95rem;opacity:.9;margin-top:.3rem}}
table{{border-collapse:collapse;margin:.5rem 0}}
th,td{{text-align:left;padding:.15rem .6rem;border-bottom:1px solid #d0d7de;font-size:.9rem}}
.grid img{{max-width:100%;border:1px solid #d0d7de}}
.cards{{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:1rem}}
.card{{margin:0;border:1px solid #d0d7de;border-radius:8px;padding:.6rem}} .card img{{width:100%}}
.card.failed{{border:2px solid #cf222e}} .neg{{color:#57606a;font-size:.85rem}} .fail{{color:#cf222e}}
</style></head><body>
<h1>kolora evaluation</h1>
<div class="verdict">gate: {html.escape(gate["result"])}<small>{html.escape(gate["reason"])}</small></div>
<h2>Scores</h2>{_table(_stats_rows(report))}
<h2>Run</h2>{facts}
<h2>Story grid</h2><div class="grid"><img src="{data_uri(grid, GRID_MAX)}" alt="story grid"></div>
<h2>Images</h2><div class="cards">{"".join(cards)}</div>
{extra_sections}
</body></html>
"""


def write_report_html(
    path: Path, report: dict[str, Any], grid: Image.Image, images: dict[int, Image.Image], extra_sections: str = ""
) -> None:
    path.write_text(render_report_html(report, grid, images, extra_sections), encoding="utf-8")
