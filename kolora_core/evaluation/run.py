"""The evaluate stage: the story grid, a report.json of what the run produced, and the gate file.

Scores are never invented: kolora has no image scorer wired in yet, so the report says scoring was
not performed and the gate is `skipped` (the workflow's publish step only runs on `passed`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kolora_core.config import RunConfig
from kolora_core.errors import KoloraError
from kolora_core.evaluation.grid import story_grid
from kolora_core.inference.story import GENERATIONS
from kolora_core.lora import LORA_FILE, load_lora, sha256_of

log = logging.getLogger("kolora.evaluate")
GRID = "grid.png"
REPORT = "report.json"
GATE = "gate.txt"
FILTER_REPORT = "filter_report.json"


def collect_generations(images_dir: Path) -> list[dict[str, Any]]:
    """Records of every generated image, from one output dir or a dir of shard outputs, in story order."""
    manifests = sorted(images_dir.rglob(GENERATIONS))
    if not manifests:
        raise KoloraError(f"no {GENERATIONS} under {images_dir}: pass the generate stage's images directory")
    records = []
    for manifest in manifests:
        for line in manifest.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            record["path"] = manifest.parent / record["file"]
            records.append(record)
    indices = [r["index"] for r in records]
    if len(set(indices)) != len(indices):
        raise KoloraError(f"{images_dir} holds the same story index twice: shards overlap; rerun generate with distinct shards")
    return sorted(records, key=lambda r: r["index"])


def _image_stats(path: Path) -> dict[str, float]:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return {"mean": round(float(pixels.mean()), 2), "std": round(float(pixels.std()), 2)}


def _training_facts(lora_dir: Path) -> dict[str, Any]:
    lora = load_lora(lora_dir / LORA_FILE)
    facts: dict[str, Any] = {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "scale": lora.scale,
        "lora_sha256": sha256_of(lora_dir / LORA_FILE),
    }
    summary = lora_dir / "train_summary.json"
    if summary.exists():
        facts |= json.loads(summary.read_text(encoding="utf-8"))
    return facts


def _data_facts(report_dir: Path) -> dict[str, Any]:
    report = json.loads((report_dir / FILTER_REPORT).read_text(encoding="utf-8"))
    return {key: report[key] for key in ("images_in", "kept", "dropped") if key in report}


def run_evaluate(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    out = outputs["report"]
    records = collect_generations(inputs["images"])
    expected = len(config.generate.prompts)
    if len(records) != expected:
        raise KoloraError(
            f"{inputs['images']} holds {len(records)} images, the story has {expected}: a generate shard is missing"
        )
    story_grid([Image.open(r["path"]) for r in records], config.evaluate).save(out / GRID)
    report = {
        "grid": GRID,
        "gate": {"result": "skipped", "reason": "no image scorer is configured, so nothing can be promoted on quality"},
        "images": [
            {k: r[k] for k in ("index", "file", "prompt", "negative_prompt", "seed", "seconds")} | _image_stats(r["path"])
            for r in records
        ],
        "data": _data_facts(inputs["filter-report"]),
        "training": _training_facts(inputs["lora"]),
        "settings": {k: records[0][k] for k in ("cfg_scale", "steps", "width", "height", "lora_strength", "base_model_sha256")},
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / GATE).write_text(report["gate"]["result"] + "\n", encoding="utf-8")
    log.info("grid of %d images and report written; gate %s", len(records), report["gate"]["result"])
