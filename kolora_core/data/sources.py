"""`ingest.source` URIs -> a stream of raw items (bytes + the source's own caption), one at a time.

Supported sources:

* `modelscope://<dataset id>` -- `MsDataset.load(id, subset_name=ingest.subset, split=ingest.split,
  version=ingest.revision, cache_dir=...)`; the id may also be a local path or glob MsDataset can load
  (a parquet export), which is how it is tested offline. Images are read undecoded (`decode=False`) so one
  bad row is skipped with a reason instead of aborting the iteration.
* a local folder of images (recursive, sorted): captions from `metadata.csv` / `metadata.jsonl` at its root
  (columns `file_name`, `text`; the Hugging Face imagefolder convention) or a `<image stem>.txt` sidecar.
* a `.parquet` file, or a folder of them (Hugging Face datasets export: an `image` column holding
  {bytes, path} structs or raw bytes, and a `text`/`caption` column), read in small record batches.
* `smoke://` -- `ingest.smoke_images` images drawn by `kolora_core.data.smoke`.

A source yields `Item`s (one per image, possibly already marked as skipped: a file listed in the metadata
but missing, an unreadable file) and `Problem`s (a caption file that is not UTF-8, a bad metadata line):
both end up in the ingest report with their reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolora_core.config import IngestConfig
from kolora_core.data.normalise import MAX_FILE_BYTES
from kolora_core.errors import KoloraError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
IMAGE_COLUMNS = ("image", "img", "images", "jpg", "png", "picture")
TEXT_COLUMNS = ("text", "caption", "prompt", "description", "txt")
ID_COLUMNS = ("id", "image_id", "key", "__key__")
PARQUET_BATCH_ROWS = 16


@dataclass(frozen=True)
class Item:
    """One image of the source. `skip` = (kind, reason) when the source already knows it is unusable."""

    original_id: str
    data: bytes | None
    text: str | None
    skip: tuple[str, str] | None = None


@dataclass(frozen=True)
class Problem:
    """A source file that is not an image but still affects the dataset (captions, metadata)."""

    original_id: str
    kind: str
    reason: str


SourceEvent = Item | Problem


def default_cache_dir() -> Path:
    """Where ModelScope downloads go: $KOLORA_DATA_CACHE, else ModelScope's own dataset cache."""
    if os.environ.get("KOLORA_DATA_CACHE"):
        return Path(os.environ["KOLORA_DATA_CACHE"])
    from modelscope.utils.config_ds import MS_DATASETS_CACHE

    return Path(MS_DATASETS_CACHE)


def _clean_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    text = " ".join(str(value).split())
    return text or None


def _read_file(path: Path, original_id: str, text: str | None) -> Item:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Item(original_id, None, text, ("too_large", f"{size / 2**20:.0f} MiB file is over the limit"))
        return Item(original_id, path.read_bytes(), text)
    except OSError as exc:
        return Item(original_id, None, text, ("unreadable", f"cannot read the file: {exc.strerror or exc}"))


def _decode_caption_file(path: Path, name: str) -> tuple[str | None, Problem | None]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): re-save it as UTF-8; its captions are ignored"
        return None, Problem(name, "caption_file_not_utf8", reason)


# --- local folder of images ---------------------------------------------------------------------------------


def _metadata_rows(path: Path) -> Iterator[tuple[str, str | None] | Problem]:
    content, problem = _decode_caption_file(path, path.name)
    if problem:
        yield problem
        return
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        columns = reader.fieldnames or []
        text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
        if "file_name" not in columns:
            reason = f"has no file_name column (columns: {', '.join(columns)}); its captions are ignored"
            yield Problem(path.name, "bad_metadata", reason)
            return
        for row in reader:
            yield row["file_name"], _clean_text(row.get(text_col)) if text_col else None
        return
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = row["file_name"]
        except (ValueError, KeyError, TypeError) as exc:
            yield Problem(f"{path.name}:{n}", "bad_metadata", f"line {n} is not a JSON object with file_name: {exc}")
            continue
        yield name, _clean_text(next((row[c] for c in TEXT_COLUMNS if c in row), None))


def _folder_captions(root: Path) -> tuple[dict[str, str | None], list[Problem]]:
    captions: dict[str, str | None] = {}
    problems: list[Problem] = []
    for name in METADATA_FILES:
        path = root / name
        if not path.is_file():
            continue
        for entry in _metadata_rows(path):
            if isinstance(entry, Problem):
                problems.append(entry)
                continue
            file_name, text = entry
            key = Path(str(file_name)).as_posix().removeprefix("./")
            if key in captions:
                problems.append(Problem(f"{name}:{key}", "bad_metadata", f"lists {key} twice; the first entry is used"))
                continue
            captions[key] = text
    return captions, problems


def iter_folder(root: Path) -> Iterator[SourceEvent]:
    captions, problems = _folder_captions(root)
    yield from problems
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    seen = set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        seen.add(rel)
        text = captions.get(rel)
        sidecar = path.with_suffix(".txt")
        if text is None and sidecar.is_file():
            content, problem = _decode_caption_file(sidecar, sidecar.relative_to(root).as_posix())
            if problem:
                yield problem
            text = _clean_text(content)
        yield _read_file(path, rel, text)
    for rel in sorted(set(captions) - seen):
        yield Item(rel, None, captions[rel], ("missing_file", "listed in the metadata but no such image file in the folder"))


# --- parquet / Hugging Face datasets rows -------------------------------------------------------------------


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def _image_bytes(value: Any, base_dir: Path | None) -> tuple[bytes | None, tuple[str, str] | None]:
    """An image cell (bytes, {bytes, path} struct, a path string, or a decoded PIL image) -> bytes, or a skip."""
    if hasattr(value, "save") and hasattr(value, "mode"):  # already decoded (a streaming dataset without features)
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue(), None
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], None
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return (bytes(value), None) if value else (None, ("empty_file", "empty image cell (0 bytes)"))
    if isinstance(value, str) and value:
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            return None, ("missing_file", f"the row points at {value}, which does not exist")
        item = _read_file(path, value, None)
        return item.data, item.skip
    return None, ("empty_file", "no image in this row")


def _row_item(row: dict, original_id: str, image_col: str, text_col: str | None, base_dir: Path | None) -> Item:
    data, skip = _image_bytes(row.get(image_col), base_dir)
    return Item(original_id, data, _clean_text(row.get(text_col)) if text_col else None, skip)


def _columns(columns: list[str], where: str) -> tuple[str, str | None, str | None]:
    image_col = _pick(columns, IMAGE_COLUMNS)
    if image_col is None:
        raise KoloraError(f"{where} has no image column (looked for {', '.join(IMAGE_COLUMNS)}; found {', '.join(columns)})")
    return image_col, _pick(columns, TEXT_COLUMNS), _pick(columns, ID_COLUMNS)


def iter_parquet(path: Path) -> Iterator[SourceEvent]:
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise KoloraError(f"ingest.source {path} holds no .parquet files")
    for file in files:
        label = file.relative_to(path).as_posix() if path.is_dir() else file.name
        try:
            pf = pq.ParquetFile(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            yield Problem(label, "bad_parquet", f"cannot read the parquet file: {exc}")
            continue
        image_col, text_col, id_col = _columns(pf.schema_arrow.names, f"parquet file {label}")
        wanted = [c for c in (image_col, text_col, id_col) if c]
        row_number = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            for row in batch.to_pylist():
                original_id = str(row[id_col]) if id_col and row.get(id_col) is not None else f"{label}:{row_number}"
                yield _row_item(row, original_id, image_col, text_col, file.parent)
                row_number += 1


def load_modelscope(dataset_id: str, config: IngestConfig, cache_dir: Path) -> Any:
    """The seed's MsDataset.load call, with subset/split/revision/cache dir from the config."""
    try:
        from modelscope.msdatasets import MsDataset
    except ImportError as exc:
        raise KoloraError(f"modelscope:// needs `modelscope[datasets]` installed: {exc}") from None
    kwargs: dict[str, Any] = {"subset_name": config.subset, "split": config.split, "cache_dir": str(cache_dir)}
    if config.revision:
        kwargs["version"] = config.revision
    try:
        return MsDataset.load(dataset_id, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing dataset: one line that names the dataset
        raise KoloraError(
            f"cannot load modelscope://{dataset_id} (subset {config.subset}, split {config.split}, "
            f"revision {config.revision or 'latest'}): {type(exc).__name__}: {exc}"
        ) from None


def iter_hf_rows(ds: Any, where: str) -> Iterator[SourceEvent]:
    """Rows of a datasets.Dataset (or what MsDataset.load returned), images left undecoded."""
    import datasets

    if isinstance(ds, dict):
        raise KoloraError(f"{where} returned several splits ({', '.join(ds)}): set ingest.split to one of them")
    ds = getattr(ds, "ds_instance", ds)  # MsDataset wraps a datasets.Dataset
    features = getattr(ds, "features", None) or {}
    columns = list(features) or list(getattr(ds, "column_names", None) or [])
    image_col, text_col, id_col = _columns(columns, where)
    if isinstance(features.get(image_col), datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    for n, row in enumerate(ds):
        original_id = str(row[id_col]) if id_col and row.get(id_col) is not None else str(n)
        yield _row_item(row, original_id, image_col, text_col, None)


def iter_modelscope(dataset_id: str, config: IngestConfig, cache_dir: Path | None = None) -> Iterator[SourceEvent]:
    ds = load_modelscope(dataset_id, config, cache_dir or default_cache_dir())
    yield from iter_hf_rows(ds, f"modelscope://{dataset_id}")


# --- dispatch -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    label: str  # what records carry as `source` (never an absolute path)
    kind: str  # smoke | modelscope | folder | parquet
    events: Iterator[SourceEvent]


def _smoke_events(count: int) -> Iterator[SourceEvent]:
    from kolora_core.data.smoke import smoke_items

    for original_id, data, text in smoke_items(count):
        yield Item(original_id, data, text)


def open_source(config: IngestConfig) -> Source:
    """Resolve `ingest.source` to a lazy event stream; bad URIs and missing paths fail at once with one line."""
    uri = config.source.strip()
    if uri.startswith("smoke://"):
        return Source("smoke://", "smoke", _smoke_events(config.smoke_images))
    if uri.startswith("modelscope://"):
        dataset_id = uri.removeprefix("modelscope://")
        if not dataset_id:
            raise KoloraError("ingest.source modelscope:// needs a dataset id, e.g. modelscope://AI-ModelScope/lowres_anime")
        label = uri if not Path(dataset_id).is_absolute() else f"modelscope://{Path(dataset_id).name}"
        return Source(label, "modelscope", iter_modelscope(dataset_id, config))
    if "://" in uri and not uri.startswith("file://"):
        raise KoloraError(
            f"ingest.source {uri}: unsupported scheme; use modelscope://<id>, smoke://, a local folder or a .parquet file/folder"
        )
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise KoloraError(f"ingest.source {path} does not exist: pass a folder of images, a .parquet file/folder, or a URI")
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise KoloraError(f"ingest.source {path} is a file but not .parquet: pass its folder, or a parquet export")
        return Source(f"parquet:{path.name}", "parquet", iter_parquet(path))
    has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file())
    if not has_images and any(path.rglob("*.parquet")):
        return Source(f"parquet:{path.name}", "parquet", iter_parquet(path))
    return Source(f"folder:{path.name}", "folder", iter_folder(path))
