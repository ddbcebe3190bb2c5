"""The filter stage: a `dataset` -> Data-Juicer recipe -> DiffSynth `trainset` + `filter-report`.

1. read dataset.jsonl; open and check every image (inside the dataset dir, sha256 as recorded, fully decoded as
   ingest decodes it, size as recorded): a file that fails is dropped by the pseudo-op `kolora_verify`, never
   handed to Data-Juicer;
2. run `filter.ops` with Data-Juicer (`datajuicer.run_datajuicer`, temp work dir, absolute paths there only);
3. account for every input: kept, or dropped by a named op with its stats; a drop Data-Juicer cannot explain
   (an op failed on a batch, which it logs and ignores) fails the stage, except under a deduplicator;
4. nothing kept -> one line naming the op that removed the rest and the stats that explain it;
5. write train/<i>.png + train/metadata.csv in dataset order, filter_report.json and filter_report.html.

File names, order and report contents depend only on the inputs and the config, so a rerun writes the same files.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolora_core.config import RunConfig
from kolora_core.data import filter_report as fr
from kolora_core.data.buckets import bucket_histogram
from kolora_core.data.datajuicer import DJResult, Sample, check_environment, effective_np, run_datajuicer
from kolora_core.data.layout import (
    DATAJUICER_LOG,
    FILTER_REPORT_HTML,
    FILTER_REPORT_JSON,
    TRAIN_DIR,
    TRAIN_METADATA,
    Record,
    read_ingest_report,
    read_records,
    write_json,
    write_train_metadata,
)
from kolora_core.data.normalise import Skip, decode, normalise, strict_pillow
from kolora_core.errors import KoloraError

log = logging.getLogger("kolora.filter")
VERIFY_OP = "kolora_verify"
INGEST_KEYS = ("source", "source_kind", "images_read", "kept", "skipped", "duplicates", "problems", "skipped_by_kind", "skips")


@dataclass
class Drop:
    record: Record
    op: str
    rule: str
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id,
            "original_id": r.original_id,
            "source": r.source,
            "image": r.image,
            "width": r.width,
            "height": r.height,
            "op": self.op,
            "rule": self.rule,
            "reason": self.reason,
            "stats": {k: fr.first_value(v) for k, v in sorted(self.stats.items())},
        }


def verify_records(dataset_dir: Path, records: list[Record]) -> tuple[list[Record], list[Drop]]:
    """Open and check every image before Data-Juicer sees it. The pixels are decoded (`normalise.decode`), not only the
    chunks' CRCs checked (`verify()`): a dataset from the bucket whose records match a PNG with a broken deflate stream
    was handed on, Data-Juicer (truncated loading on) read it as black or grey, and train failed on it after loading
    the models. `decode` costs ~27 ms per 1024x1024 PNG on a 2-core CI machine, little beside Data-Juicer's run."""
    root = dataset_dir.resolve()
    ok: list[Record] = []
    rejected: list[Drop] = []
    seen: set[str] = set()

    def reject(record: Record, rule: str, reason: str) -> None:
        rejected.append(Drop(record, VERIFY_OP, rule, reason))

    for record in records:
        path = (root / record.image).resolve()
        if record.id in seen:
            reject(record, "duplicate record", f"id {record.id} appears twice in dataset.jsonl")
            continue
        seen.add(record.id)
        if root not in path.parents:
            reject(record, "path outside the dataset", f"{record.image} is outside the dataset directory")
        elif not path.is_file():
            reject(record, "missing file", f"{record.image} does not exist")
        elif hashlib.sha256(data := path.read_bytes()).hexdigest() != record.sha256:  # the bytes decoded below
            reject(record, "sha256 mismatch", f"{record.image} changed since ingest (sha256 differs)")
        elif not record.text.strip():
            reject(record, "empty caption", "the record has no text")
        else:
            try:
                with strict_pillow():
                    size = decode(data).size
            except Skip as exc:
                reject(record, "unreadable image", f"{record.image}: {exc.reason}")
                continue
            if size != (record.width, record.height):
                reject(
                    record,
                    "size mismatch",
                    f"{record.image} is {size[0]}x{size[1]}, the record says {record.width}x{record.height}",
                )
                continue
            ok.append(record)
    return ok, rejected


@dataclass
class Outcome:
    kept_rows: list[dict[str, Any]]  # Data-Juicer's output rows
    drops: list[Drop]  # dataset order
    ops: list[dict[str, Any]]  # per-op counts, recipe order


def account(verified: list[Record], result: DJResult, ops: list[dict[str, dict[str, Any]]]) -> Outcome:
    """Every verified image is either in Data-Juicer's output or in one op's trace; else the run is not trusted."""
    by_id = {r.id: r for r in verified}
    kept_ids = [row["id"] for row in result.kept]
    unknown = [i for i in kept_ids if i not in by_id]
    if unknown or len(set(kept_ids)) != len(kept_ids):
        raise KoloraError(
            f"Data-Juicer returned {len(kept_ids)} rows for {len(verified)} inputs, {len(unknown)} with ids it was not given "
            f"(e.g. {unknown[:1]}): kolora's filter stage supports recipes that keep or drop images, not ones that add samples"
        )
    kept = set(kept_ids)
    dropped_by: dict[str, tuple[str, dict[str, Any]]] = {}
    for op, rows in result.dropped.items():
        for row in rows:
            if row["id"] in by_id and row["id"] not in kept and row["id"] not in dropped_by:
                dropped_by[row["id"]] = (op, row["stats"])
    args_of = {name: args for op in ops for name, args in op.items()}
    drops: list[Drop] = []
    unexplained = [r for r in verified if r.id not in kept and r.id not in dropped_by]
    dedups = [name for op in ops for name in op if name.endswith("_deduplicator")]
    if unexplained and not dedups:
        first_error = result.error_lines[0][:300] if result.error_lines else "none logged"
        raise KoloraError(
            f"Data-Juicer kept {len(kept)} of {len(verified)} images but its traces explain only {len(dropped_by)} drops: "
            f"{len(unexplained)} images vanished (an op failed on their batch; Data-Juicer logs that and exits 0). "
            f"First error in its log: {first_error}"
        )
    for record in verified:
        if record.id in dropped_by:
            op, stats = dropped_by[record.id]
            rule, reason = fr.explain_drop(op, args_of.get(op, {}), stats)
            drops.append(Drop(record, op, rule, reason, stats))
        elif record.id not in kept:
            drops.append(
                Drop(record, dedups[0], "near-duplicate", f"same perceptual hash as another image ({' / '.join(dedups)})")
            )
    per_op = Counter(d.op for d in drops)
    rows, remaining, counted = [], len(verified), set()
    for op in ops:
        for name, args in op.items():
            n = per_op[name] if name not in counted else 0
            counted.add(name)
            rows.append({"op": name, "args": args, "images_in": remaining, "dropped": n, "images_out": remaining - n})
            remaining -= n
    if remaining != len(kept):
        raise KoloraError(f"Data-Juicer's per-op drops ({dict(per_op)}) do not add up: {len(verified)} in, {len(kept)} kept")
    order = {r.id: i for i, r in enumerate(verified)}  # the Ray executor does not keep input order
    return Outcome(sorted(result.kept, key=lambda row: order[row["id"]]), drops, rows)


def empty_result_message(outcome: Outcome, images_in: int) -> str:
    culprit = next(row for row in outcome.ops if row["images_in"] > 0 and row["images_out"] == 0)
    op, args = culprit["op"], culprit["args"]
    stats = [d.stats for d in outcome.drops if d.op == op]
    earlier = [f"{row['op']} removed {row['dropped']}" for row in outcome.ops[: outcome.ops.index(culprit)] if row["dropped"]]
    what = (
        f"removed all {culprit['images_in']} images"
        if culprit["images_in"] == images_in
        else f"removed the last {culprit['images_in']} of {images_in} images ({', '.join(earlier)} before it)"
    )
    return (
        f"{op} {what}: {fr.op_stat_ranges(op, args, stats)}; nothing is left to train on: lower its limits in filter.ops "
        f"(a --config YAML) or use a source whose images pass them"
    )


def write_trainset(
    out: Path, dataset_dir: Path, kept_rows: list[dict[str, Any]], by_id: dict[str, Record]
) -> list[dict[str, Any]]:
    """train/<i>.png + train/metadata.csv; returns the kept entries for the report."""
    train = out / TRAIN_DIR
    train.mkdir(parents=True, exist_ok=True)
    entries, rows = [], []
    for i, row in enumerate(kept_rows):
        record = by_id[row["id"]]
        name = f"{i}.png"
        ours = (dataset_dir / record.image).resolve()
        theirs = Path(row["image"][0]).resolve() if row["image"] else ours
        sha256, width, height = record.sha256, record.width, record.height
        if theirs == ours:
            shutil.copyfile(ours, train / name)
        else:  # a mapper in the recipe wrote a new image: normalise it like any input
            try:
                image = normalise(theirs.read_bytes())
            except (Skip, OSError) as exc:
                raise KoloraError(f"the recipe produced an unusable image for {record.original_id}: {exc}") from None
            (train / name).write_bytes(image.png)
            sha256, width, height = image.sha256, image.width, image.height
        text = row["text"] or record.text
        rows.append((name, text))
        entries.append(
            {
                "file_name": f"{TRAIN_DIR}/{name}",
                "id": record.id,
                "original_id": record.original_id,
                "source": record.source,
                "sha256": sha256,
                "width": width,
                "height": height,
                "text": text,
            }
        )
    write_train_metadata(train / TRAIN_METADATA, rows)
    return entries


def _dims(items: list[dict[str, Any]] | list[Record]) -> dict[str, Any]:
    sizes = [(x["width"], x["height"]) if isinstance(x, dict) else (x.width, x.height) for x in items]
    return {
        "width": fr.describe([float(w) for w, _ in sizes]),
        "height": fr.describe([float(h) for _, h in sizes]),
        "aspect_ratio": fr.describe([round(w / h, 4) for w, h in sizes]),
    }


def build_report(
    records: list[Record],
    verified: list[Record],
    rejected: list[Drop],
    outcome: Outcome,
    kept: list[dict[str, Any]],
    ingest: dict[str, Any],
    ops: list[dict[str, dict[str, Any]]],
    np: int,
    executor_type: str,
) -> dict[str, Any]:
    drops = rejected + outcome.drops
    dropped = [d.record for d in drops]
    verify_row = {"op": VERIFY_OP, "args": {}, "images_in": len(records), "dropped": len(rejected), "images_out": len(verified)}
    return {
        "images_in": len(records),
        "kept": len(kept),
        "dropped": len(records) - len(kept),
        "np": np,
        "executor_type": executor_type,
        "recipe": ops,
        "ops": [verify_row, *outcome.ops],
        "dropped_by_op": dict(Counter(d.op for d in drops)),
        "dropped_images": [d.to_json() for d in drops],
        "kept_images": kept,
        "dimensions": {"all": _dims(records), "kept": _dims(kept), "dropped": _dims(dropped)},
        "histograms": {
            "width": fr.histogram([float(k["width"]) for k in kept], [float(r.width) for r in dropped]),
            "height": fr.histogram([float(k["height"]) for k in kept], [float(r.height) for r in dropped]),
            "aspect_ratio": fr.histogram([k["width"] / k["height"] for k in kept], [r.width / r.height for r in dropped]),
        },
        "ingest": {k: ingest[k] for k in INGEST_KEYS if k in ingest},
    }


def filter_dataset(config: RunConfig, dataset_dir: Path, trainset_dir: Path, report_dir: Path) -> dict[str, Any]:
    ops = config.filter.ops
    executor_type = config.filter.executor_type
    ray_address = config.filter.ray_address
    check_environment(ops)
    records = list(read_records(dataset_dir))
    if not records:
        raise KoloraError(f"dataset {dataset_dir} has no records in dataset.jsonl: rerun ingest")
    verified, rejected = verify_records(dataset_dir, records)
    if not verified:
        raise KoloraError(f"none of the {len(records)} images in {dataset_dir} passed verification, e.g. {rejected[0].reason}")
    if rejected:
        log.warning("filter: %d images failed verification and are not filtered (first: %s)", len(rejected), rejected[0].reason)
    by_id = {r.id: r for r in verified}
    with tempfile.TemporaryDirectory(prefix="kolora-dj-") as tmp:
        samples = [Sample(r.id, r.text, (dataset_dir / r.image).resolve()) for r in verified]
        dj_log = report_dir / DATAJUICER_LOG
        result = run_datajuicer(samples, ops, config.filter.np, Path(tmp), dj_log, executor_type, ray_address)
        if result.error_lines:
            log.warning(
                "filter: Data-Juicer logged %d error lines; first: %s", len(result.error_lines), result.error_lines[0][:300]
            )
        outcome = account(verified, result, ops)
        if not outcome.kept_rows:
            raise KoloraError(empty_result_message(outcome, len(verified)))
        kept = write_trainset(trainset_dir, dataset_dir, outcome.kept_rows, by_id)
    log.info(
        "filter: Data-Juicer took %.1f s for %d images (%.1f images/s)",
        result.seconds,
        len(samples),
        len(samples) / result.seconds,
    )
    report = build_report(
        records,
        verified,
        rejected,
        outcome,
        kept,
        read_ingest_report(dataset_dir),
        ops,
        effective_np(config.filter.np),
        executor_type,
    )
    if config.train.buckets:  # what the train stage will make of the kept images (kolora_core.data.buckets)
        report["buckets"] = bucket_histogram([(k["width"], k["height"]) for k in kept], config.train.resolution)
    write_json(report_dir / FILTER_REPORT_JSON, report)
    kept_thumbs = [fr.thumbnail_data_uri(trainset_dir / k["file_name"]) for k in kept[: fr.MAX_THUMBS]]
    dropped_thumbs = [fr.thumbnail_data_uri(dataset_dir / d["image"]) for d in report["dropped_images"][: fr.MAX_THUMBS]]
    (report_dir / FILTER_REPORT_HTML).write_text(fr.render_html(report, kept_thumbs, dropped_thumbs), encoding="utf-8")
    log.info(
        "filter: %d in, %d kept, %d dropped (%s)",
        report["images_in"],
        report["kept"],
        report["dropped"],
        ", ".join(f"{n} by {op}" for op, n in report["dropped_by_op"].items()) or "none",
    )
    return report


def run_filter(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Stage entry point (see jobs/filter.py)."""
    filter_dataset(config, inputs["dataset"], outputs["trainset"], outputs["filter-report"])
