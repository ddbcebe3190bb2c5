"""The release directory: what a published LoRA consists of (the one owner of that format) and how it is assembled.

Only when the evaluate report's gate is `passed`, `assemble_release` copies the LoRA (plus the
`lora_diffusers.safetensors` / `lora_kohya.safetensors` exports and `train_summary.json` where the train
stage wrote them), report.json, report.html and grid.png into the release directory, with a `release.json`
naming the model, the version and every file's sha256. Uploading it is `publish.py`'s job, not a stage's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError

RELEASE_MANIFEST = "release.json"
FORMAT = "kolora-release-v1"
LORA_FILES = ("lora.safetensors", "lora_diffusers.safetensors", "lora_kohya.safetensors", "train_summary.json")
REPORT_FILES = ("report.json", "report.html", "grid.png")
REQUIRED = ("lora.safetensors", "report.json", "report.html", "grid.png")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def default_version(lora_sha256: str) -> str:
    """Same LoRA, same version: rerunning a pipeline never mints a second version of identical weights."""
    return f"lora-{lora_sha256[:12]}"


def read_gate(report_dir: Path) -> dict[str, Any]:
    path = report_dir / "report.json"
    if not path.is_file():
        raise KoloraError(f"{path} not found: pass the evaluate stage's report directory to --report")
    return json.loads(path.read_text(encoding="utf-8"))


def assemble_release(name: str, version: str | None, lora_dir: Path, report_dir: Path, out: Path) -> dict[str, Any]:
    """Fill `out` with the release and its release.json; refuses unless the evaluate gate passed."""
    report = read_gate(report_dir)
    gate = report.get("gate", {})
    if gate.get("result") != "passed":
        raise KoloraError(
            f"evaluate gate is '{gate.get('result', 'missing')}' ({gate.get('reason', 'no reason recorded')}): "
            "only a LoRA whose evaluation passed is published"
        )
    sources = [lora_dir / f for f in LORA_FILES] + [report_dir / f for f in REPORT_FILES]
    missing = [p for p in sources if p.name in REQUIRED and not p.is_file()]
    if missing:
        raise KoloraError(f"{missing[0]} is missing: a release needs {', '.join(REQUIRED)}")
    files = {}
    for source in sources:
        if source.is_file():
            shutil.copy2(source, out / source.name)
            files[source.name] = {"sha256": file_sha256(out / source.name), "size": (out / source.name).stat().st_size}
    lora_sha = files["lora.safetensors"]["sha256"]
    settings, training = report.get("settings", {}), report.get("training", {})
    release = {
        "format": FORMAT,
        "name": name,
        "version": version or default_version(lora_sha),
        "lora_sha256": lora_sha,
        "lora": {k: training.get(k) for k in ("rank", "alpha", "scale")},
        "base_model": settings.get("base_model"),
        "base_model_sha256": settings.get("base_model_sha256"),
        "gate": {k: gate.get(k) for k in ("result", "reason", "mean_aesthetic", "min_aesthetic")},
        "files": files,
    }
    (out / RELEASE_MANIFEST).write_text(
        json.dumps(release, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    return release
