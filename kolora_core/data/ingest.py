"""The ingest stage: `ingest.source` -> a normalised, captioned, de-duplicated `dataset` directory.

Streams the source one image at a time (memory stays flat whatever the dataset size): caption, open and
verify, normalise to RGB PNG (`normalise`), drop exact duplicates by the PNG's sha256, write
`images/<sha256[:16]>.png` and one `dataset.jsonl` line. Everything skipped is listed with its reason in
`ingest_report.json`; when nothing usable remains the stage fails with one line naming the commonest reasons.
Output order is source order and every name derives from content, so a rerun writes identical files.

Captions: `ingest.caption` (default "二次元", the seed's fixed text) replaces the source's own text when not
null; `ingest.trigger_word`, when set, is prefixed as "<trigger>, <caption>". An image with no caption left
is skipped as `missing_caption` (Data-Juicer would silently drop its empty text anyway).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from kolora_core.config import IngestConfig, RunConfig
from kolora_core.data.layout import DATASET_JSONL, ID_LENGTH, IMAGES_DIR, INGEST_REPORT, Record, image_relpath, write_json
from kolora_core.data.normalise import Skip, normalise
from kolora_core.data.sources import Item, Problem, open_source
from kolora_core.errors import KoloraError

log = logging.getLogger("kolora.ingest")
PROGRESS_EVERY_S = 10.0


def caption_for(config: IngestConfig, source_text: str | None) -> str | None:
    """ingest.caption (or the source's text when it is null), prefixed by the trigger word; None = no caption."""
    base = " ".join((config.caption if config.caption is not None else source_text or "").split())
    if not base:
        return None  # a trigger word alone is not a caption
    trigger = " ".join(config.trigger_word.split())
    return f"{trigger}, {base}" if trigger else base


class _Progress:
    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    def maybe_log(self, counts: Counter, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rate = counts["read"] / max(now - self.started, 1e-9)
        log.info(
            "ingest: read %d, kept %d, skipped %d (%d duplicates), %.1f images/s",
            counts["read"],
            counts["kept"],
            counts["skipped"],
            counts["duplicate"],
            rate,
        )


def _summary(kinds: Counter) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())


def _nothing_usable(named: str, read: int, images: list[dict], problems: list[dict]) -> str:
    """The one line of a source with nothing to keep: its images' skips counted and one shown, then the problems of
    its other files (a caption file not UTF-8, a .heic) apart: they are no images, but often the reason why."""
    parts = []
    if images:
        kinds = Counter(s["kind"] for s in images)
        parts.append(f"all {read} skipped ({_summary(kinds)}); e.g. {images[0]['original_id']}: {images[0]['reason']}")
    if problems:
        kinds = Counter(s["kind"] for s in problems)
        first = problems[0]
        parts.append(f"{len(problems)} other files not used ({_summary(kinds)}), e.g. {first['original_id']}: {first['reason']}")
    if not read:
        return f"{named} holds no images" + "".join(f"; {part}" for part in parts)
    return f"no usable images in {named}: " + "; ".join(parts)


def ingest_to(config: IngestConfig, out: Path, named: str | None = None) -> dict:
    """Write the dataset layout into `out`; return the ingest report. `named` is how messages name the source
    (default `ingest.source <value>`)."""
    named = named or f"ingest.source {config.source}"
    source = open_source(config)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}  # sha256 -> original_id of its first occurrence
    counts: Counter = Counter()
    kinds: Counter = Counter()
    skips: list[dict] = []
    skipped_images: list[dict] = []  # the skips above that are images', and the problems of the source's other files
    problems: list[dict] = []
    progress = _Progress()
    stopped_early = False

    def skip(original_id: str, kind: str, reason: str, image: bool = True) -> None:
        entry = {"original_id": original_id, "kind": kind, "reason": reason}
        skips.append(entry)
        (skipped_images if image else problems).append(entry)
        kinds[kind] += 1
        counts["skipped" if image else "problems"] += 1
        if kind == "duplicate":
            counts["duplicate"] += 1
        log.debug("skip %s: %s: %s", original_id, kind, reason)

    with open(out / DATASET_JSONL, "w", encoding="utf-8") as jsonl:
        for event in source.events:
            if isinstance(event, Problem):
                skip(event.original_id, event.kind, event.reason, image=False)
                continue
            assert isinstance(event, Item)
            counts["read"] += 1
            progress.maybe_log(counts)
            if event.skip:
                skip(event.original_id, *event.skip)
                continue
            text = caption_for(config, event.text)
            if text is None:
                skip(event.original_id, "missing_caption", "no caption in the source and ingest.caption is null")
                continue
            try:
                image = normalise(event.data or b"")
            except Skip as exc:
                skip(event.original_id, exc.kind, exc.reason)
                continue
            if image.sha256 in seen:
                skip(event.original_id, "duplicate", f"same pixels as {seen[image.sha256]}")
                continue
            seen[image.sha256] = event.original_id
            relpath = image_relpath(image.sha256)
            target = out / relpath
            if target.exists():  # a 64-bit prefix collision between different images: never seen, never silent
                raise KoloraError(f"two different images share the id {image.sha256[:ID_LENGTH]}; report this as a bug")
            target.write_bytes(image.png)
            record = Record(
                id=image.sha256[:ID_LENGTH],
                text=text,
                image=relpath,
                source=source.label,
                original_id=event.original_id,
                sha256=image.sha256,
                width=image.width,
                height=image.height,
                source_sha256=image.source_sha256,
            )
            jsonl.write(record.to_json() + "\n")
            counts["kept"] += 1
            if config.caption is not None and (event.text or "").strip():  # kept with ingest.caption, not its own
                counts["captions_replaced"] += 1
            if config.max_images is not None and counts["kept"] >= config.max_images:
                stopped_early = True
                break
    progress.maybe_log(counts, force=True)
    if counts["captions_replaced"]:
        log.info(
            "ingest: ingest.caption %r replaced the source's own captions of %d images (ingest.caption: null, "
            "or -p caption=null, keeps them)",
            config.caption,
            counts["captions_replaced"],
        )

    if counts["kept"] == 0:
        raise KoloraError(_nothing_usable(named, counts["read"], skipped_images, problems))
    return {
        "source": source.label,
        "source_kind": source.kind,
        "caption": config.caption,
        "trigger_word": config.trigger_word,
        "images_read": counts["read"],
        "captions_replaced": counts["captions_replaced"],
        "kept": counts["kept"],
        "skipped": counts["skipped"],
        "duplicates": counts["duplicate"],
        "problems": counts["problems"],
        "skipped_by_kind": dict(sorted(kinds.items())),
        "stopped_at_max_images": stopped_early,
        "skips": skips,
    }


def run_ingest(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Stage entry point (see jobs/ingest.py)."""
    out = outputs["dataset"]
    ingest = config.ingest
    if "source" in inputs:  # the user's own files, handed in (on Argo: the dataset-key artifact)
        log.info("ingest: reading the uploaded --source %s (ingest.source %s is not read)", inputs["source"], ingest.source)
        ingest = ingest.model_copy(update={"source": str(inputs["source"])})
    report = ingest_to(ingest, out, named=f"--source {inputs['source']}" if "source" in inputs else None)
    write_json(out / INGEST_REPORT, report)
    others = f", {report['problems']} other files not used" if report["problems"] else ""  # counted apart: no images
    log.info(
        "ingest: %d images from %s -> %d kept, %d skipped%s (%s)",
        report["images_read"],
        report["source"],
        report["kept"],
        report["skipped"],
        others,
        ", ".join(f"{n} {k}" for k, n in report["skipped_by_kind"].items()) or "none",
    )
