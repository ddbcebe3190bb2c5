"""report.html's "Samples during training" section: the train stage's progression strip, when it made one.

Kept apart from `report_html.py`: one function that returns the section's data (the strip as a data URI and a
sentence), which the page's template shows in one `{% if validation %}` block, autoescaped like the rest.
With `train.validation_every` the train stage writes `validation_strip.png` into the LoRA output (one row per
validation prompt, one column per rendered step); the section shows it with the steps and the cost per image
from `train_summary.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from kolora_core.evaluation.report_html import GRID_MAX, data_uri
from kolora_core.training.validation import STRIP_FILE


def validation_section(lora_dir: Path) -> dict[str, str] | None:
    """{"uri", "note"} of the section, or None when the run rendered no samples during training."""
    strip = lora_dir / STRIP_FILE
    if not strip.is_file():
        return None
    summary_file = lora_dir / "train_summary.json"
    facts = json.loads(summary_file.read_text(encoding="utf-8")).get("validation") or {} if summary_file.is_file() else {}
    steps = ", ".join(str(s) for s in facts.get("rendered_steps") or []) or "?"
    note = (
        f"The validation prompts rendered with the LoRA as it was at steps {steps} "
        f"({facts.get('sampler_steps', '?')} sampler steps, {facts.get('seconds_per_image', '?')} s per image): "
        "one row per prompt, left to right in training order."
    )
    with Image.open(strip) as image:
        return {"uri": data_uri(image, GRID_MAX), "note": note}
