"""The evaluate stage: the story grid, per-image scores, report.json + report.html, and the gate file.

The scorers come from the `scorers` input (fetch-models' artifact; `kolora_core.evaluation.scoring.load_scorers`).
Scores are never invented: with `evaluate.aesthetic_repo: null` nothing is scored, the report says so and why,
and the gate is `skipped` (the workflow's publish step only runs on `passed`). Otherwise every image gets its
LAION aesthetic score (and, unless `evaluate.clip_repo` is null, its prompt similarity); the gate passes when
the mean aesthetic score reaches `evaluate.min_aesthetic` and no image failed (blank, non-finite score, or
below `evaluate.min_clip_similarity` when that is set), and, when the champion (the promoted release, input
`champion`) rendered the same story, the mean is not below the champion's by more than
`evaluate.champion_margin` (`gate.py`, `champion.py`). The report names the scorers (repo, revision) and
their identity (the scorers manifest fingerprint), which decides whether the champion's scores are read
from its report or its images re-scored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kolora_core.config import RunConfig
from kolora_core.data.layout import FILTER_REPORT_JSON
from kolora_core.data.normalise import strict_pillow
from kolora_core.device import resolve_device
from kolora_core.errors import KoloraError
from kolora_core.evaluation.champion import Rescore, compare, read_champion, read_json
from kolora_core.evaluation.gate import ImageVerdict, champion_rule, decide, image_failures, summary
from kolora_core.evaluation.grid import story_grid
from kolora_core.evaluation.layout import GATE, GRID, MEAN_AESTHETIC, REPORT, REPORT_HTML
from kolora_core.evaluation.report_html import write_report_html
from kolora_core.evaluation.scoring import AestheticScorer, Scorers, SimilarityScorer, load_scorers
from kolora_core.evaluation.validation_section import validation_section
from kolora_core.inference.story import REQUIRED_FIELDS, collect_generations, require_lora
from kolora_core.lora.format import LORA_FILE, load_lora, sha256_of
from kolora_core.models.scorers import AESTHETIC, CLIP

log = logging.getLogger("kolora.evaluate")
PER_IMAGE_SETTINGS = ("cfg_scale", "steps", "width", "height", "lora_strength")
RUN_SETTINGS = ("base_model", "base_model_sha256", "engine", "lora_scale")


def _open_image(record: dict[str, Any]) -> Image.Image:
    try:
        with strict_pillow(), Image.open(record["path"]) as image:
            return image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad data
        raise KoloraError(
            f"generated image {record['path']} cannot be read ({type(exc).__name__}: {exc}): rerun generate"
        ) from None


def _pixel_stats(image: Image.Image) -> dict[str, float]:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return {"mean": round(float(pixels.mean()), 2), "std": round(float(pixels.std()), 2)}


def _training_facts(lora_dir: Path, lora_sha256: str) -> dict[str, Any]:
    lora = load_lora(lora_dir / LORA_FILE)
    facts: dict[str, Any] = {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "scale": lora.scale,
        "lora_sha256": lora_sha256,
    }
    summary_file = lora_dir / "train_summary.json"
    if summary_file.exists():
        facts |= read_json(summary_file, "the train stage's lora directory")
    return facts


def _data_facts(report_dir: Path) -> dict[str, Any]:
    report = read_json(report_dir / FILTER_REPORT_JSON, "the filter stage's filter-report directory")
    return {key: report[key] for key in ("images_in", "kept", "dropped") if key in report}


def _score(
    name: str, not_scored: str | None, compute: Callable[[], list[float]] | None, count: int
) -> tuple[list[float | None], dict[str, Any]]:
    if compute is None:
        return [None] * count, {"status": "skipped", "reason": not_scored, "model": None}
    values = compute()
    if len(values) != count:
        raise KoloraError(f"the {name} scorer returned {len(values)} scores for {count} images")
    return list(values), {"status": "scored", "reason": None, "stats": summary(values)}


def _rescorer(aesthetic: AestheticScorer | None, clip: SimilarityScorer | None) -> Rescore | None:
    """Scoring of the champion's stored images with the scorers loaded now (None: nothing is scored now)."""
    if aesthetic is None:
        return None

    def rescore(images: list[Image.Image], prompts: list[str]) -> tuple[list[float], list[float | None]]:
        return aesthetic.score(images), list(clip.similarity(images, prompts)) if clip else [None] * len(images)

    return rescore


def run_evaluate(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path], scorers: Scorers | None = None) -> None:
    evaluate, out = config.evaluate, outputs["report"]
    records = collect_generations(inputs["images"])
    lora_sha256 = sha256_of(inputs["lora"] / LORA_FILE)  # the file the images were rendered with, and the report names
    require_lora(records, lora_sha256, inputs["images"])
    expected = max((r.get("story_size") or 0 for r in records), default=0) or len(config.generate.prompts)
    if len(records) != expected:
        raise KoloraError(
            f"{inputs['images']} holds {len(records)} images, the story has {expected}: a generate shard is missing"
        )
    cells = evaluate.grid_columns * evaluate.grid_rows
    if expected > cells:
        raise KoloraError(
            f"the story has {expected} images but the grid {evaluate.grid_columns}x{evaluate.grid_rows} has {cells} cells: "
            "raise evaluate.grid_rows"
        )
    images = {r["index"]: _open_image(r) for r in records}
    ordered = [images[r["index"]] for r in records]
    grid = story_grid(ordered, evaluate)
    grid.save(out / GRID)

    loaded = scorers if scorers is not None else load_scorers(inputs["scorers"], evaluate, resolve_device(config.device))
    aesthetic, clip, not_scored = loaded.aesthetic, loaded.clip, loaded.not_scored
    prompts = [r["prompt"] for r in records]
    aesthetic_scores, aesthetic_info = _score(
        "aesthetic", not_scored.get(AESTHETIC), (lambda: aesthetic.score(ordered)) if aesthetic else None, len(records)
    )
    clip_scores, clip_info = _score(
        "CLIP", not_scored.get(CLIP), (lambda: clip.similarity(ordered, prompts)) if clip else None, len(records)
    )
    aesthetic_info["model"] = getattr(aesthetic, "name", None)
    clip_info["model"] = getattr(clip, "name", None)

    entries, verdicts = [], []
    for record, image, score, similarity in zip(records, ordered, aesthetic_scores, clip_scores, strict=True):
        pixels = _pixel_stats(image)
        failures = image_failures(pixels["std"], score, similarity, evaluate.min_clip_similarity)
        verdicts.append(ImageVerdict(record["index"], score, similarity, failures))
        entries.append(
            {k: record[k] for k in REQUIRED_FIELDS}
            | {k: record.get(k) for k in PER_IMAGE_SETTINGS}
            | pixels
            | {"aesthetic": score, "clip_similarity": similarity, "failures": failures}
        )
    skipped = None
    if aesthetic is None:
        skipped = f"scoring skipped: {not_scored.get(AESTHETIC)}, so nothing can be promoted on quality"
    champion = read_champion(inputs["champion"])
    identity = loaded.facts.get("identity")
    comparison = compare(champion, records, identity, _rescorer(aesthetic, clip)).record()
    gate = champion_rule(decide(verdicts, evaluate.min_aesthetic, skipped), comparison, evaluate.champion_margin)
    report = {
        "grid": GRID,
        "gate": gate,
        "champion": comparison,
        "scores": {"aesthetic": aesthetic_info, "clip_similarity": clip_info},
        "scorers": loaded.facts,
        "images": entries,
        "data": _data_facts(inputs["filter-report"]),
        "training": _training_facts(inputs["lora"], lora_sha256),
        "settings": {k: records[0].get(k) for k in RUN_SETTINGS}
        | {k: records[0].get(k) for k in PER_IMAGE_SETTINGS if len({r.get(k) for r in records}) == 1},
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    champion_grid = Image.open(champion.grid).convert("RGB") if champion and champion.grid.is_file() else None
    write_report_html(out / REPORT_HTML, report, grid, images, champion_grid, validation_section(inputs["lora"]))
    (out / GATE).write_text(gate["result"] + "\n", encoding="utf-8")
    mean = gate.get("mean_aesthetic")
    (out / MEAN_AESTHETIC).write_text("" if mean is None else f"{mean:.4f}\n", encoding="utf-8")
    log.info("grid of %d images, report and gate written: %s (%s)", len(records), gate["result"], gate["reason"])
