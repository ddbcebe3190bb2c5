"""The release directory: what a published LoRA consists of (the one owner of that format) and how it is assembled.

Only when the evaluate report's gate is `passed`, `assemble_release` copies into the release directory::

    lora.safetensors (+ lora_diffusers/lora_kohya.safetensors, train_summary.json where train wrote them)
    report.json, report.html, grid.png
    images/<index>.png + images/generations.jsonl   the story as rendered, so a later candidate can be compared
                                                    with this release and re-score it when the scorers change
    release.json

release.json names the model and version, every file's sha256 (and, for safetensors files, the content hash),
and what a later run compares against: the training identity and trainset fingerprint (check-changes),
the scorer identity, the story's prompts/seeds/settings with each image's scores, and the mean.
The release's identity is its content: `identity` hashes the LoRA files' content hashes (tensor bytes and
metadata, canonically ordered), so the same weights always give the same default version.
Uploading it is `publish.py`'s job, not a stage's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.evaluation.champion import IMAGES_DIR, read_json
from kolora_core.evaluation.layout import GRID, REPORT, REPORT_HTML
from kolora_core.inference.story import GENERATIONS, collect_generations, require_lora
from kolora_core.lora.header import content_sha256, read_metadata

RELEASE_MANIFEST = "release.json"
FORMAT = "kolora-release-v2"
LORA_FILE = "lora.safetensors"
SUMMARY_FILE = "train_summary.json"
LORA_FILES = (LORA_FILE, "lora_diffusers.safetensors", "lora_kohya.safetensors", SUMMARY_FILE)
MODEL_FILES = tuple(f for f in LORA_FILES if f.endswith(".safetensors"))  # what the release identity is made of
REPORT_FILES = (REPORT, REPORT_HTML, GRID)
REQUIRED = (LORA_FILE, *REPORT_FILES)
STORY_FIELDS = ("index", "file", "prompt", "negative_prompt", "seed", "cfg_scale", "steps", "width", "height", "lora_strength")
SCORE_FIELDS = ("aesthetic", "clip_similarity")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def default_version(identity: str) -> str:
    """Same LoRA, same version: rerunning a pipeline never mints a second version of identical weights."""
    return f"lora-{identity[:12]}"


def release_identity(files: dict[str, dict[str, Any]]) -> str:
    """sha256 over the content hashes of the release's LoRA files: the same weights and metadata, the same identity."""
    content = {name: files[name]["content_sha256"] for name in MODEL_FILES if name in files}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def read_gate(report_dir: Path) -> dict[str, Any]:
    """evaluate's report.json, with the sections the release reads of the type evaluate writes (it is an artifact)."""
    path = report_dir / REPORT
    report = read_json(path, "the evaluate stage's report directory to --report")
    images = report.get("images", [])
    sections = [report.get(key, {}) for key in ("gate", "training", "settings", "scores")]
    if not all(isinstance(section, dict) for section in sections) or not isinstance(images, list):
        raise KoloraError(f"{path} is not an evaluate report (gate, training, settings, scores, images): rerun evaluate")
    if not all(isinstance(entry, dict) for entry in images):
        raise KoloraError(f"{path}: an entry of 'images' is not a JSON object: rerun evaluate")
    return report


def _copy_story(images_dir: Path, out: Path, report: dict[str, Any], lora_sha256: str) -> list[dict[str, Any]]:
    """The story images (of the LoRA `lora_sha256`) and one generations.jsonl (story order) under out/images/;
    returns release.json's story."""
    records = collect_generations(images_dir)
    require_lora(records, lora_sha256, images_dir)
    target = out / IMAGES_DIR
    target.mkdir()
    scored = {e.get("index"): e for e in report.get("images", [])}
    story, lines = [], []
    for record in records:
        shutil.copy2(record.pop("path"), target / record["file"])
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
        scores = scored.get(record["index"], {})
        story.append({k: record.get(k) for k in STORY_FIELDS} | {k: scores.get(k) for k in SCORE_FIELDS})
    (target / GENERATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return story


def _training(out: Path, lora_dir: Path) -> dict[str, Any]:
    """Training identity, trainset fingerprint and the inputs behind the identity, as train recorded them: read from
    the copies in the release `out` (the bytes released, the LoRA the one checked against the evaluation), not from
    `lora_dir` again, which may have been rewritten since the copy."""
    summary_path = out / SUMMARY_FILE
    try:
        summary = read_json(summary_path, "the train stage's lora directory") if summary_path.is_file() else {}
    except KoloraError as bad:  # the copy is byte for byte the file --lora held: say where it came from
        raise KoloraError(f"{bad} (copied from --lora {lora_dir}): pass the train stage's lora directory") from None
    metadata = read_metadata(out / LORA_FILE)
    return {
        "training_identity": summary.get("training_identity") or metadata.get("training_identity"),
        "trainset_sha256": summary.get("trainset_sha256") or metadata.get("dataset_sha256"),
        "training_inputs": summary.get("training_inputs"),
    }


def assemble_release(
    name: str, version: str | None, lora_dir: Path, report_dir: Path, images_dir: Path, out: Path
) -> dict[str, Any]:
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
    for source in sources:
        if source.is_file():
            shutil.copy2(source, out / source.name)
    # The copy is what is released, so the copy is what must be the evaluated LoRA (hashed once, here).
    evaluated, lora_sha256 = report.get("training", {}).get("lora_sha256"), file_sha256(out / LORA_FILE)
    if evaluated != lora_sha256:  # the gate passed for the LoRA evaluate read, not necessarily this one
        raise KoloraError(
            f"{report_dir / REPORT} is the evaluation of LoRA {str(evaluated)[:12]}, but --lora {lora_dir} holds "
            f"{lora_sha256[:12]}: pass the lora directory that evaluate was given, or evaluate this one"
        )
    story = _copy_story(images_dir, out, report, lora_sha256)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        digest = lora_sha256 if rel == LORA_FILE else file_sha256(path)
        files[rel] = {"sha256": digest, "size": path.stat().st_size}
        if rel in MODEL_FILES:
            files[rel]["content_sha256"] = content_sha256(path)
    identity = release_identity(files)
    settings, training, scores = report.get("settings", {}), report.get("training", {}), report.get("scores", {})
    release = {
        "format": FORMAT,
        "name": name,
        "version": version or default_version(identity),
        "identity": identity,
        "lora_sha256": files[LORA_FILE]["sha256"],
        "lora": {k: training.get(k) for k in ("rank", "alpha", "scale")},
        "base_model": settings.get("base_model"),
        "base_model_sha256": settings.get("base_model_sha256"),
        **_training(out, lora_dir),
        "scorers": report.get("scorers") or {"identity": None},  # the scorer identity and which repos scored
        "gate": {k: gate.get(k) for k in ("result", "reason", "mean_aesthetic", "min_aesthetic", "champion")},
        "scores": {f"mean_{k}": ((scores.get(k) or {}).get("stats") or {}).get("mean") for k in SCORE_FIELDS},
        "story": story,
        "files": files,
    }
    (out / RELEASE_MANIFEST).write_text(
        json.dumps(release, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    return release
