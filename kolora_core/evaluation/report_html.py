"""report.html: one self-contained page (images inlined as JPEG data URIs) a person opens to judge the run.

The page is the Jinja2 template `templates/report.html.j2` (autoescaped: prompts and reasons are text, never
markup); this module only prepares its rows. Champion and challenger stand side by side: both grids, each
image's scores with the difference, and the gate's decision with its reason. The font stack names CJK fonts
of every desktop system, so Chinese prompts render as text, not boxes, where the browser's default has none.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from PIL import Image

from kolora_core.data.filter_report import FONT_STACK

VERDICT_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#9a6700"}
THUMB = 512
GRID_MAX = 2048
_TEMPLATES = Path(__file__).parent / "templates"


def data_uri(image: Image.Image, max_side: int) -> str:
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    """Numbers to fixed digits, None to an em dash; everything else as text (the template escapes it)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    return env


def _score_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("aesthetic", "aesthetic score"), ("clip_similarity", "CLIP similarity")):
        score = report["scores"][key]
        stats = score.get("stats")
        if score["status"] != "scored" or not stats:
            rows.append((label, f"not scored: {score['reason']}"))
            continue
        rows.append((label, " · ".join(f"{k} {stats[k]:.3f}" for k in ("mean", "min", "max", "std"))))
    return rows


def _run_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    settings, training = report.get("settings", {}), report.get("training", {})
    return [
        ("base model", settings.get("base_model")),
        ("engine", settings.get("engine")),
        ("LoRA sha256", training.get("lora_sha256")),
        ("rank / alpha", f"{training.get('rank')} / {training.get('alpha')}"),
        ("training", ", ".join(f"{k} {v}" for k, v in training.items() if k in ("steps", "final_loss")) or None),
        ("training identity", training.get("training_identity")),
        ("data", ", ".join(f"{k} {v}" for k, v in report.get("data", {}).items()) or None),
    ]


def _versus_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    theirs = {i["index"]: i for i in report.get("champion", {}).get("images", [])}
    rows = []
    for entry in report["images"]:
        champion = theirs.get(entry["index"], {})
        mine, other = entry.get("aesthetic"), champion.get("aesthetic")
        rows.append(
            {
                "index": entry["index"],
                "prompt": entry["prompt"],
                "aesthetic": mine,
                "champion_aesthetic": other,
                "delta": mine - other if mine is not None and other is not None else None,
                "clip": entry.get("clip_similarity"),
                "champion_clip": champion.get("clip_similarity"),
            }
        )
    return rows


def _card(entry: dict[str, Any], image: Image.Image) -> dict[str, Any]:
    rows = [
        ("seed", entry["seed"]),
        ("aesthetic", entry.get("aesthetic")),
        ("CLIP similarity", entry.get("clip_similarity")),
        ("cfg / steps", f"{entry.get('cfg_scale')} / {entry.get('steps')}"),
        ("size", f"{entry.get('width')}×{entry.get('height')}"),
        ("LoRA strength", entry.get("lora_strength")),
        ("seconds", entry.get("seconds")),
    ]
    return {"entry": entry, "uri": data_uri(image, THUMB), "rows": rows}


def render_report_html(
    report: dict[str, Any],
    grid: Image.Image,
    images: dict[int, Image.Image],
    champion_grid: Image.Image | None = None,
    validation: dict[str, str] | None = None,
) -> str:
    """The page; `validation` is the samples-during-training section (`validation_section.py`), None without one."""
    gate = report["gate"]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            gate=gate,
            colour=VERDICT_COLOURS.get(gate["result"], "#57606a"),
            font_stack=FONT_STACK,
            champion=report.get("champion") or {"status": "none", "reason": "no champion was compared"},
            grid_uri=data_uri(grid, GRID_MAX),
            champion_grid_uri=data_uri(champion_grid, GRID_MAX) if champion_grid is not None else None,
            versus=_versus_rows(report),
            score_rows=_score_rows(report),
            run_rows=_run_rows(report),
            cards=[_card(entry, images[entry["index"]]) for entry in report["images"]],
            validation=validation,
        )
    )


def write_report_html(
    path: Path,
    report: dict[str, Any],
    grid: Image.Image,
    images: dict[int, Image.Image],
    champion_grid: Image.Image | None = None,
    validation: dict[str, str] | None = None,
) -> None:
    path.write_text(render_report_html(report, grid, images, champion_grid, validation), encoding="utf-8")
