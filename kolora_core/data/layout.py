"""On-disk layout of the data artifacts: the one owner of these formats, for the ingest, filter and train stages.

`dataset` (ingest output, filter input)::

    images/<sha256[:16]>.png   normalised RGB, lossless PNG; the name is the record id
    dataset.jsonl              one Record per line, in source order
    ingest_report.json         counts and every skipped input with its reason

`trainset` (filter output, train input; DiffSynth's own layout, what
`diffsynth.data.simple_text_image.TextImageDataset` reads)::

    train/<i>.png              i = 0..kept-1 in dataset order
    train/metadata.csv         columns file_name,text (utf-8, no BOM; a BOM is accepted when read)

`filter-report`::

    filter_report.json         top-level integer keys images_in, kept, dropped (read by the runner)
    filter_report.html         self-contained: tables, histograms, contact sheet (base64 thumbnails)
    datajuicer.log             Data-Juicer's own output (its work and images dirs written as <work>, <images>)

No file in these directories holds an absolute data path: image paths are relative to the directory they are in.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kolora_core.errors import KoloraError

IMAGES_DIR = "images"
DATASET_JSONL = "dataset.jsonl"
INGEST_REPORT = "ingest_report.json"

TRAIN_DIR = "train"
TRAIN_METADATA = "metadata.csv"
TRAIN_COLUMNS = ("file_name", "text")

FILTER_REPORT_JSON = "filter_report.json"
FILTER_REPORT_HTML = "filter_report.html"
DATAJUICER_LOG = "datajuicer.log"

ID_LENGTH = 16


@dataclass(frozen=True)
class Record:
    """One image of the dataset: what it shows, where it came from, and how to check it is intact."""

    id: str  # sha256[:16]; also the image file name
    text: str  # the caption the model trains on
    image: str  # path relative to the dataset dir: images/<id>.png
    source: str  # the ingest.source it came from
    original_id: str  # its id in that source (row index, relative file name, ...)
    sha256: str  # sha256 of the PNG file as written (`sha256sum images/<id>.png`)
    width: int
    height: int
    source_sha256: str = ""  # sha256 of the original bytes as read from the source

    @classmethod
    def from_json(cls, line: str) -> Record:
        data = json.loads(line)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


def image_relpath(sha256: str) -> str:
    return f"{IMAGES_DIR}/{sha256[:ID_LENGTH]}.png"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_records(dataset_dir: Path) -> Iterator[Record]:
    """Stream the records of a dataset dir; a malformed line is an error naming the file and line."""
    path = dataset_dir / DATASET_JSONL
    if not path.is_file():
        raise KoloraError(f"dataset {dataset_dir} has no {DATASET_JSONL}: pass the output directory of the ingest stage")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield Record.from_json(line)
            except (ValueError, TypeError) as exc:
                raise KoloraError(f"{path} line {n} is not a dataset record: {exc}") from None


def read_ingest_report(dataset_dir: Path) -> dict:
    path = dataset_dir / INGEST_REPORT
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise KoloraError(f"{path} is not valid JSON: {exc}") from None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_train_metadata(path: Path, rows: list[tuple[str, str]]) -> None:
    """metadata.csv as DiffSynth reads it (`pandas.read_csv`): header file_name,text, utf-8, quoted where needed."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TRAIN_COLUMNS)
        writer.writerows(rows)


def read_trainset(root: Path) -> list[tuple[str, str]]:
    """(file_name, text) rows; an empty or broken set fails here, before any model is loaded."""
    metadata = root / TRAIN_DIR / TRAIN_METADATA
    if not metadata.exists():
        raise KoloraError(f"training set {root} has no {TRAIN_DIR}/{TRAIN_METADATA}: pass the filter stage's trainset directory")
    with metadata.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not set(TRAIN_COLUMNS) <= set(reader.fieldnames):
            raise KoloraError(f"{metadata} must have the columns file_name,text; found {reader.fieldnames}")
        rows = [(row["file_name"], row["text"]) for row in reader]
    if not rows:
        raise KoloraError(f"training set {metadata} lists no images: the filter kept nothing; loosen filter.ops")
    for file_name, _ in rows:
        if not (root / TRAIN_DIR / file_name).is_file():
            raise KoloraError(f"{metadata} lists {file_name}, which is not in {root / TRAIN_DIR}")
    return rows


def trainset_fingerprint(root: Path, rows: list[tuple[str, str]]) -> str:
    """sha256 over captions and image bytes, in metadata order: names the data a LoRA was trained on."""
    digest = hashlib.sha256()
    for file_name, text in rows:
        digest.update(text.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256((root / TRAIN_DIR / file_name).read_bytes()).digest())
    return digest.hexdigest()
