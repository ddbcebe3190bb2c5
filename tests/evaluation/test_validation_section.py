"""report.html's samples-during-training section: shown when the LoRA output has a progression strip, absent otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from kolora_core.evaluation.validation_section import validation_section
from kolora_core.training.validation import STRIP_FILE


def test_section_from_the_strip_and_summary(tmp_path: Path) -> None:
    assert validation_section(tmp_path) is None
    Image.new("RGB", (512, 270), "white").save(tmp_path / STRIP_FILE)
    facts = {"rendered_steps": [0, 2, 4], "sampler_steps": 20, "seconds_per_image": 1.5}
    (tmp_path / "train_summary.json").write_text(json.dumps({"validation": facts}), encoding="utf-8")
    section = validation_section(tmp_path)
    assert section is not None and section["uri"].startswith("data:image/jpeg;base64,")
    assert "steps 0, 2, 4" in section["note"] and "1.5 s per image" in section["note"]
