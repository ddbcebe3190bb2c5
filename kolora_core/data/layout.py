"""On-disk layout of the data artifacts: the one owner of these formats, for the ingest, filter and train stages.

`dataset` (ingest output, filter input)::

    images/<sha256[:16]>.png   normalised RGB, lossless PNG; the name is the record id
    dataset.jsonl              one Record per line, in source order
    ingest_report.json         counts (read by the runner's summary) and every skipped input with its reason

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
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PIL import Image

from kolora_core.config.files import read_text
from kolora_core.data.confine import Escape, resolve_inside
from kolora_core.data.normalise import strict_pillow
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
        """One dataset.jsonl line (from the bucket on Argo): each field of the type it is declared with, or a TypeError
        naming it (a caption 5 or null, an image path 5, an id list were tracebacks deep in the filter)."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        known = {f.name: f.type for f in fields(cls)}
        for name, value in data.items():
            want = {"str": str, "int": int}[known[name]] if name in known else object
            if not isinstance(value, want) or isinstance(value, bool):
                raise TypeError(f"field {name!r} is {json.dumps(value)[:40]}, not {'text' if want is str else 'an integer'}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


def image_relpath(sha256: str) -> str:
    return f"{IMAGES_DIR}/{sha256[:ID_LENGTH]}.png"


def read_records(dataset_dir: Path) -> Iterator[Record]:
    """Stream the records of a dataset dir; a malformed line is an error naming the file and line."""
    path = dataset_dir / DATASET_JSONL
    if not path.is_file():
        raise KoloraError(f"dataset {dataset_dir} has no {DATASET_JSONL}: pass the output directory of the ingest stage")
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is named like any other bad line
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield Record.from_json(raw.decode("utf-8"))
            except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise KoloraError(f"{path} line {n} is not a dataset record: {exc}; rerun the ingest stage") from None


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
    text = read_text(metadata, "training set metadata", "write it as the filter stage does (utf-8 file_name,text)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not set(TRAIN_COLUMNS) <= set(reader.fieldnames):
        raise KoloraError(f"{metadata} must have the columns file_name,text; found {reader.fieldnames}")
    rows: list[tuple[str, str]] = []
    try:
        for row in reader:
            if None in row or None in row.values():  # DictReader's fill for a row with more or fewer fields than columns
                raise KoloraError(
                    f"{metadata} line {reader.line_num} does not have the {len(reader.fieldnames)} fields of its header "
                    f"({', '.join(reader.fieldnames)}): quote a caption holding commas, or rerun the filter stage"
                )
            rows.append((row["file_name"], row["text"]))
    except csv.Error as exc:
        raise KoloraError(f"{metadata} line {reader.line_num} is not CSV ({exc}): rerun the filter stage") from None
    if not rows:
        raise KoloraError(f"training set {metadata} lists no images: the filter kept nothing; loosen filter.ops")
    images = (root / TRAIN_DIR).resolve()
    for file_name, _ in rows:  # a trainset from a bucket is untrusted: `../x`, `/etc/passwd` or a symlink out is refused
        try:
            real = resolve_inside(images, images / file_name)
        except Escape as exc:
            if exc.kind == "outside_source":
                detail = f"which lies outside {root / TRAIN_DIR} (not read): a trainset's images must be inside it"
                raise KoloraError(f"{metadata} lists {file_name}, {detail}") from None
            raise KoloraError(
                f"{metadata} lists {file_name}, which is not in {root / TRAIN_DIR}: each file_name must name an image "
                "inside it (rerun the filter stage, or fix the row)"
            ) from None
        if not real.is_file():
            raise KoloraError(f"{metadata} lists {file_name}, which is not a file in {root / TRAIN_DIR}")
        _check_image(real)
    return rows


def _check_image(path: Path) -> None:
    """Identify and structurally verify one training image (headers, PNG checksums), without decoding a PNG's pixels:
    a damaged trainset (on Argo it comes from the bucket) fails here, naming the file, not inside a loader worker.
    Other formats are decoded: their `verify()` checks nothing (a JPEG cut in half passed it). The filter writes PNGs,
    so only a trainset made elsewhere pays for that.

    Why not decode PNGs too: measured on the 2-core CI machine (Pillow 13, 1024x1024 RGB PNGs of 1.7-3.0 MiB, the
    seed's size; load average 4, CI running), `verify()` takes 0.4-1.5 s per 1000 images, `load()` 16-32 s and the
    rows check (`normalise.check_png_rows`) 10 s more: as long as loading the models. So a PNG with valid CRCs but a
    broken or short deflate stream passes here and is named where its pixels are first decoded (the fast engine's
    cache build, the seed engine's step: `kolora_core.training.decoding`), in this check's line (`unreadable_image`),
    after the models load."""
    try:
        with strict_pillow(), Image.open(path) as im:
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on bad data
        raise unreadable_image(path, f"{type(exc).__name__}: {exc}") from None


def unreadable_image(path: Path, reason: str) -> KoloraError:
    """The one line for a training image that cannot be read, `reason` being the decoder's '<error type>: <message>'."""
    reason = " ".join(reason.split())[:200]
    return KoloraError(f"training image {path} is not a readable image ({reason}): rerun the filter stage")


def trainset_fingerprint(root: Path, rows: list[tuple[str, str]]) -> str:
    """sha256 over captions and image bytes, in metadata order: names the data a LoRA was trained on."""
    digest = hashlib.sha256()
    for file_name, text in rows:
        digest.update(text.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256((root / TRAIN_DIR / file_name).read_bytes()).digest())
    return digest.hexdigest()
