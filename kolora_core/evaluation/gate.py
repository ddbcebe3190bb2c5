"""The promotion gate: the absolute threshold, then the champion rule.

Absolute (`decide`): pass only when the mean aesthetic score reaches `evaluate.min_aesthetic` and no image
failed. Champion (`champion_rule`): when the promoted release of the same model rendered the same story
(kolora_core.evaluation.champion), a candidate that passed must also not be worse than the champion by
more than `evaluate.champion_margin`: mean >= champion mean - margin. With no champion yet (the first run)
or a champion that rendered another story, the absolute threshold alone decides and the reason says so.

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


def champion_rule(record: dict[str, Any], champion: dict[str, Any], margin: float) -> dict[str, Any]:
    """The gate record with the champion rule applied; `champion` is report.json's champion section.

    Only a candidate that passed the absolute threshold can fail here; the record keeps what was compared.
    """
    record = record | {"champion_margin": margin, "champion": {k: champion.get(k) for k in ("status", "version", "comparable")}}
    champion_mean = champion.get("mean_aesthetic")
    record["champion"]["mean_aesthetic"] = champion_mean
    if record["result"] != PASSED:
        return record
    if not champion.get("comparable") or champion_mean is None:
        return record | {"result": PASSED, "reason": f"{record['reason']}; {champion.get('reason')}"}
    mean, bar = record["mean_aesthetic"], champion_mean - margin
    versus = f"champion {champion.get('version')}'s {champion_mean:.4f} - evaluate.champion_margin {margin} = {bar:.4f}"
    if mean < bar:
        return record | {"result": FAILED, "reason": f"mean aesthetic score {mean:.4f} < {versus}: not better than the champion"}
    return record | {"result": PASSED, "reason": f"{record['reason']}; and >= {versus}"}
