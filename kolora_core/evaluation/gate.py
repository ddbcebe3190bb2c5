"""The promotion gate: pass only when the mean aesthetic score reaches the threshold and no image failed.

Results are `passed`, `failed` or `skipped` (no aesthetic model configured: nothing is scored, nothing is
invented, nothing can be promoted). `gate.txt` holds the result alone; the workflow reads it as the
evaluate step's `gate` output parameter (default `skipped` when evaluate did not run), and the publish
stage refuses anything but `passed`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
BLANK_STD = 1.0  # pixel std (0-255) under which an image is one flat colour: a NaN/black decode, not a picture


@dataclass
class ImageVerdict:
    """One image's scores and, if any, why it failed."""

    index: int
    aesthetic: float | None = None
    clip_similarity: float | None = None
    failures: list[str] = field(default_factory=list)


def image_failures(
    pixel_std: float, aesthetic: float | None, similarity: float | None, min_similarity: float | None
) -> list[str]:
    failures = []
    if pixel_std < BLANK_STD:
        failures.append(f"blank image (pixel std {pixel_std:.2f} < {BLANK_STD})")
    if aesthetic is not None and not math.isfinite(aesthetic):
        failures.append(f"aesthetic score is {aesthetic}")
    if similarity is not None and not math.isfinite(similarity):
        failures.append(f"CLIP similarity is {similarity}")
    elif similarity is not None and min_similarity is not None and similarity < min_similarity:
        failures.append(f"CLIP similarity {similarity:.4f} < evaluate.min_clip_similarity {min_similarity}")
    return failures


def summary(values: list[float]) -> dict[str, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return {
        "mean": statistics.fmean(finite),
        "min": min(finite),
        "max": max(finite),
        "median": statistics.median(finite),
        "std": statistics.pstdev(finite),
        "count": len(finite),
    }


def decide(images: list[ImageVerdict], min_aesthetic: float, skipped_reason: str | None) -> dict[str, Any]:
    """The gate record for report.json: result, a one-line reason, and the numbers it was decided on."""
    failed = [i for i in images if i.failures]
    record: dict[str, Any] = {"min_aesthetic": min_aesthetic, "failed_images": [i.index for i in failed]}
    if skipped_reason is not None:
        return record | {"result": SKIPPED, "reason": skipped_reason, "mean_aesthetic": None}
    scores = [i.aesthetic for i in images if i.aesthetic is not None and math.isfinite(i.aesthetic)]
    mean = statistics.fmean(scores) if scores else float("nan")
    record["mean_aesthetic"] = mean if scores else None
    if failed:
        first = failed[0]
        reason = f"{len(failed)} of {len(images)} images failed (image {first.index}: {first.failures[0]})"
        return record | {"result": FAILED, "reason": reason}
    if not scores or mean < min_aesthetic:
        reason = f"mean aesthetic score {mean:.4f} < evaluate.min_aesthetic {min_aesthetic}"
        return record | {"result": FAILED, "reason": reason}
    reason = f"mean aesthetic score {mean:.4f} >= evaluate.min_aesthetic {min_aesthetic}; all {len(images)} images ok"
    return record | {"result": PASSED, "reason": reason}
