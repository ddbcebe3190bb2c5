"""Finished images of a generate attempt, kept so that a retry renders only what is missing (issue 13).

The generate stage's resumable output `--progress` (`kolora_core.stages`) holds, per finished image,
`NNN.png` and then `NNN.json` (its generation record and the PNG's sha256), each written to a temp name and
renamed, so a record never exists without its whole image. On a cluster the directory is uploaded after a
failed attempt too and downloaded by the retry; on this machine a rerun finds it beside `--images`.

It comes from a bucket, so nothing in it is trusted: an image is reused only when its record parses, names
the very job this attempt would render (prompt, seed, size, steps, cfg, strength) and the same LoRA, base
model and engine, and the PNG's bytes match the recorded hash. Anything else is rendered again.
The committed `images` output is assembled from here (hard links, copies across filesystems), in story
order, and the directory is removed once that is done, as train removes its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from PIL import Image

from kolora_core.inference.story import GENERATIONS, Generation, Job, image_name, record_line, write_png

log = logging.getLogger("kolora.generate")
_JOB_FIELDS = tuple(f.name for f in fields(Job))


class Progress:
    """One shard's finished images in `directory`; `common` holds the facts every record shares (LoRA, model, engine)."""

    def __init__(self, directory: Path, common: dict[str, Any]) -> None:
        self.directory, self.common = directory, common

    def finished(self, job: Job) -> Generation | None:
        """The record of `job`'s image when a whole, matching one is kept here; None means render it."""
        png, sidecar = self._paths(job.index)
        try:
            kept = json.loads(sidecar.read_text(encoding="utf-8"))
            record = Generation(**kept["generation"])
            digest = hashlib.sha256(png.read_bytes()).hexdigest()
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
            return None  # absent, torn or from another kolora version
        same = {f: getattr(record, f) for f in _JOB_FIELDS} == asdict(job) and all(
            getattr(record, k) == v for k, v in self.common.items()
        )
        if not same or record.file != png.name or digest != kept.get("sha256"):
            log.info("progress: %s does not match this run's job %d; rendering it again", png.name, job.index)
            return None
        return record

    def save(self, image: Image.Image, record: Generation) -> None:
        """Keep a finished image: the PNG first, then its record, each atomically."""
        png, sidecar = self._paths(record.index)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = png.with_name(f".{png.name}.tmp")
        write_png(image, tmp, record)
        tmp.replace(png)
        tmp = sidecar.with_name(f".{sidecar.name}.tmp")
        payload = {"generation": asdict(record), "sha256": hashlib.sha256(png.read_bytes()).hexdigest()}
        tmp.write_text(json.dumps(payload, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(sidecar)

    def assemble(self, records: list[Generation], out: Path) -> None:
        """The stage's output: every image and generations.jsonl in story order; then the kept images go."""
        records = sorted(records, key=lambda r: r.index)
        for record in records:
            png, _ = self._paths(record.index)
            try:
                os.link(png, out / record.file)
            except OSError:
                shutil.copy2(png, out / record.file)
        (out / GENERATIONS).write_text("".join(record_line(r) + "\n" for r in records), encoding="utf-8")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _paths(self, index: int) -> tuple[Path, Path]:
        png = self.directory / image_name(index)
        return png, png.with_suffix(".json")
