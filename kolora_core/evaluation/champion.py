"""The champion directory (the promoted release a candidate is compared with) and the comparison itself.

`kolora champion` (kolora_core.release.champion) fills the directory from `<prefix>/<name>/latest.json`;
evaluate and check-changes read it. This module owns its format::

    champion.json          {"status": "found", "name", "version", "prefix", "lora_sha256"} or {"status": "none"}
    release.json           the champion's release manifest (kolora_core.release reads it: check-changes)
    report.json, grid.png  its evaluation report and story grid
    images/                its story images and generations.jsonl (to check comparability and to re-score)

Comparable means the same story: per image the same prompt, negative prompt, seed, size, steps and cfg.
The champion's scores come from its report when its scorers were the ones scoring now (same scorer
identity), and are re-scored from its stored images with the current scorers when they were not.
Everything here was read from a bucket: the champion's own files are checked against its release.json.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from kolora_core.errors import KoloraError
from kolora_core.evaluation.layout import GRID, REPORT
from kolora_core.inference.story import collect_generations

CHAMPION_JSON = "champion.json"
IMAGES_DIR = "images"  # as in the release: the story images and their generations.jsonl
FOUND, NONE = "found", "none"
# what makes two renderings of a story the same test (lora_strength and the engine are the candidate's business)
COMPARED = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "cfg_scale")


@dataclass(frozen=True)
class Champion:
    """A found champion: its pointer facts, its report and the directory holding its files."""

    root: Path
    name: str
    version: str
    report: dict[str, Any]

    @property
    def label(self) -> str:
        return f"champion {self.name} {self.version}"

    @property
    def grid(self) -> Path:
        return self.root / GRID


def read_json(path: Path, writer: str = "the directory `kolora champion` wrote") -> dict[str, Any]:
    """A JSON object from an input artifact (untrusted); a missing or malformed one is one line, `writer` saying where
    a good one comes from."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KoloraError(f"{path} is missing: pass {writer}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise KoloraError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise KoloraError(f"{path} must hold a JSON object")
    return data


def read_champion(directory: Path) -> Champion | None:
    """The champion in `directory`, or None when there is none yet (the first run of a model: not an error)."""
    pointer = read_json(directory / CHAMPION_JSON)
    if pointer.get("status") == NONE:
        return None
    if pointer.get("status") != FOUND:
        raise KoloraError(f"{directory / CHAMPION_JSON}: status must be '{FOUND}' or '{NONE}', got {pointer.get('status')!r}")
    if not isinstance(pointer.get("name"), str) or not isinstance(pointer.get("version"), str):
        raise KoloraError(f"{directory / CHAMPION_JSON} names no champion (name and version): rerun `kolora champion`")
    return Champion(directory, pointer["name"], pointer["version"], read_json(directory / REPORT))


def scorer_identity(report: dict[str, Any]) -> str | None:
    """Which scorers produced a report's scores: its `scorers.identity`, the scorers artifact's manifest fingerprint
    (kolora_core.models.scorers). None for a report that records none: its scores compare with nothing."""
    scorers = report.get("scorers")
    identity = scorers.get("identity") if isinstance(scorers, dict) else None
    return str(identity) if identity else None


def story_difference(candidate: list[dict[str, Any]], champion: list[dict[str, Any]]) -> str | None:
    """Why two stories are not the same test (the first difference), or None when they are comparable."""
    if len(candidate) != len(champion):
        return f"the story has {len(candidate)} images, the champion's {len(champion)}"
    for mine, theirs in zip(candidate, champion, strict=True):
        for key in COMPARED:
            if mine.get(key) != theirs.get(key):
                return f"image {mine.get('index')}: {key} {theirs.get(key)!r} -> {mine.get(key)!r}"
    return None


def _finite_mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if len(finite) == len(values) and finite else None


@dataclass
class Comparison:
    """What report.json's `champion` section says and what the gate decides on."""

    status: str  # found / none
    version: str | None = None
    comparable: bool | None = None
    reason: str = ""
    scores_from: str | None = None  # "report" or "re-scored"
    mean_aesthetic: float | None = None
    images: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return asdict(self)


Rescore = Callable[[list[Image.Image], list[str]], tuple[list[float], list[float | None]]]


def compare(
    champion: Champion | None, records: list[dict[str, Any]], identity: str | None, rescore: Rescore | None
) -> Comparison:
    """Compare the candidate's story with the champion's and find the champion's aesthetic scores.

    `records`: the candidate's generation records; `identity`: the scorer identity scoring now;
    `rescore(images, prompts) -> (aesthetic, clip)` scores images with the current scorers (None: nothing is
    scored now, so there is nothing to compare).
    """
    if champion is None:
        return Comparison(NONE, reason="no champion (none promoted yet, or latest.json cleared): the absolute threshold only")
    found = Comparison(FOUND, champion.version)
    try:
        theirs = collect_generations(champion.root / IMAGES_DIR)
    except KoloraError as exc:
        return _not_comparable(found, f"{champion.label} has no readable story images ({exc})")
    difference = story_difference(records, theirs)
    if difference is not None:
        return _not_comparable(found, f"{champion.label} rendered another story ({difference})")
    found.comparable = True
    if rescore is None:
        found.reason = "nothing is scored now, so the champion is not compared"
        return found
    by_index = {e.get("index"): e for e in champion.report.get("images", []) if isinstance(e, dict)}
    aesthetic = [_number(by_index.get(r["index"], {}).get("aesthetic")) for r in theirs]
    clip = [_number(by_index.get(r["index"], {}).get("clip_similarity")) for r in theirs]
    same_scorers = identity is not None and scorer_identity(champion.report) == identity
    if same_scorers and _finite_mean(aesthetic) is not None:
        found.scores_from, found.reason = "report", "same story and scorers: the champion's scores are read from its report"
    else:
        images = [Image.open(r["path"]).convert("RGB") for r in theirs]
        aesthetic, clip = rescore(images, [r["prompt"] for r in theirs])
        why = "scorers changed" if not same_scorers else "its report holds no usable scores"
        found.scores_from, found.reason = "re-scored", f"same story, {why}: the champion's images were re-scored now"
    found.mean_aesthetic = _finite_mean(aesthetic)
    found.images = [
        {"index": r["index"], "aesthetic": a, "clip_similarity": c} for r, a, c in zip(theirs, aesthetic, clip, strict=True)
    ]
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _not_comparable(comparison: Comparison, reason: str) -> Comparison:
    comparison.comparable, comparison.reason = False, f"{reason}: the absolute threshold only"
    return comparison
