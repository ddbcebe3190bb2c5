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
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kolora_core.config import IngestConfig
from kolora_core.data.confine import Entry, Escape, read_inside, walk_inside
from kolora_core.data.normalise import MAX_FILE_BYTES
from kolora_core.data.suffixes import IMAGE_SUFFIXES, PARQUET_SUFFIX, is_hidden, is_image_name, is_parquet_name
from kolora_core.errors import KoloraError
from kolora_core.stages import COMPLETE_MARKER

METADATA_FILES = ("metadata.csv", "metadata.jsonl")
ROOT_FILES = frozenset({*METADATA_FILES, COMPLETE_MARKER})  # read at the root (the upload's marker: by the stage shell)
SIDECAR_SUFFIX = ".txt"
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
    """A caption cell or field as one line of text; a list is several captions (the first is used). Anything else that
    is not text (a number, a mapping, bytes) is no caption: written out it would be `{'a': 1}` or `b'...'`."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    return " ".join(value.split()) or None


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    """The first of `wanted` among `columns`, whatever its case (`Text`, `CAPTION`)."""
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def _read_file(root: Path, path: Path, original_id: str, text: str | None) -> Item:
    try:
        return Item(original_id, read_inside(root, path, MAX_FILE_BYTES), text)
    except Escape as exc:
        return Item(original_id, None, text, (exc.kind, exc.reason))


def _decode_caption_file(root: Path, path: Path, name: str) -> tuple[str | None, Problem | None]:
    try:
        raw = read_inside(root, path, MAX_FILE_BYTES)
    except Escape as exc:
        return None, Problem(name, exc.kind, f"{exc.reason}; its captions are ignored")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): re-save it as UTF-8; its captions are ignored"
        return None, Problem(name, "caption_file_not_utf8", reason)


# --- local folder of images ---------------------------------------------------------------------------------


def _metadata_rows(root: Path, path: Path) -> Iterator[tuple[str, str | None] | Problem]:
    content, problem = _decode_caption_file(root, path, path.name)
    if problem:
        yield problem
        return
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        columns = reader.fieldnames or []
        text_col = _pick(columns, TEXT_COLUMNS)
        if "file_name" not in columns or text_col is None:
            missing = "file_name column" if "file_name" not in columns else f"caption column ({', '.join(TEXT_COLUMNS)})"
            reason = f"has no {missing} (columns: {', '.join(columns)}); its captions are ignored"
            yield Problem(path.name, "bad_metadata", reason)
            return
        try:
            for row in reader:
                yield row["file_name"], _clean_text(row.get(text_col))
        except csv.Error as exc:  # a field over csv's 128 KiB limit: a traceback that ended the stage
            line = reader.line_num + 1  # the line being parsed is not counted yet
            reason = f"line {line} is not CSV ({exc}): fix it; its rows from there on are ignored"
            yield Problem(f"{path.name}:{line}", "bad_metadata", reason)
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
        text_key = _pick(list(row), TEXT_COLUMNS)
        yield name, _clean_text(row[text_key]) if text_key else None


def _name_key(name: str) -> str:
    """A file name as the metadata is matched by: NFC, so that `café.png` typed in a metadata.csv names the file that
    macOS wrote as `cafe` + a combining accent (NFD), as the two look alike to the user."""
    return unicodedata.normalize("NFC", name)


def _folder_captions(root: Path, files: dict[str, Entry]) -> tuple[dict[str, str | None], list[Problem]]:
    """Captions from the metadata files at the root; a metadata file that is refused is reported by the walk."""
    captions: dict[str, str | None] = {}
    listed_in: dict[str, str] = {}  # file name -> the metadata file whose entry is used
    problems: list[Problem] = []
    for name in METADATA_FILES:
        entry = files.get(name)
        if entry is None or entry.real is None:
            continue
        for row in _metadata_rows(root, root / name):
            if isinstance(row, Problem):
                problems.append(row)
                continue
            file_name, text = row
            key = _name_key(Path(str(file_name)).as_posix().removeprefix("./"))
            if key in captions:
                reason = f"lists {key} twice; the first entry is used"
                if listed_in[key] != name:  # both metadata.csv and metadata.jsonl: not "twice" in either
                    reason = f"lists {key}, which {listed_in[key]} lists too: that entry is used (keep one metadata file)"
                problems.append(Problem(f"{name}:{key}", "bad_metadata", reason))
                continue
            captions[key] = text
            listed_in[key] = name
    return captions, problems


def iter_folder(root: Path) -> Iterator[SourceEvent]:
    """Images under `root` in path order; symlinks that leave the root (or loop) are refused per file, never followed.

    Names in the metadata are only matched against the files found: a row naming `../x` or `/etc/passwd`
    matches nothing and is reported as missing, it is never opened. Every other file that is not hidden and not
    read (neither an image, a caption file used nor the upload's `_SUCCESS`) is reported as `not_read`, last.
    """
    root = root.resolve()
    files = {entry.rel: entry for entry in walk_inside(root)}
    captions, problems = _folder_captions(root, files)
    yield from problems
    for rel in sorted(files):
        entry = files[rel]
        if entry.escape is not None and not is_image_name(rel):
            yield Problem(rel, entry.escape.kind, entry.escape.reason)
    seen: set[str] = set()
    sidecars: set[str] = set()
    for rel in sorted(r for r in files if is_image_name(r)):
        entry = files[rel]
        seen.add(rel)
        text = captions.get(_name_key(rel))
        sidecar = Path(rel).with_suffix(SIDECAR_SUFFIX).as_posix()
        if text is None and sidecar in files and files[sidecar].real is not None:
            sidecars.add(sidecar)
            content, problem = _decode_caption_file(root, root / sidecar, sidecar)
            if problem:
                yield problem
            text = _clean_text(content)
        if entry.escape is not None:
            yield Item(rel, None, text, (entry.escape.kind, entry.escape.reason))
            continue
        yield _read_file(root, root / rel, rel, text)
    for rel in sorted(set(captions) - {_name_key(rel) for rel in seen}):
        yield Item(rel, None, captions[rel], ("missing_file", "listed in the metadata but no such image file in the folder"))
    stems = {PurePosixPath(rel).with_suffix("").as_posix(): rel for rel in sorted(seen, reverse=True)}
    used = seen | sidecars | ROOT_FILES
    for rel in sorted(files):
        if files[rel].escape is None and rel not in used and not is_hidden(rel):
            yield Problem(rel, "not_read", _not_read(rel, stems))


def _not_read(rel: str, stems: dict[str, str]) -> str:
    """Why a file of a folder source is not read, and what to do: a user's file is never passed over without a word
    (a .heic photo, a caption file whose image is named otherwise, a metadata.csv in a subfolder)."""
    path = PurePosixPath(rel)
    if path.name in METADATA_FILES:
        return "metadata files are read at the folder root only: list these images there (file_name relative to the root)"
    if is_parquet_name(rel):
        return "the folder holds images, so it is read as a folder of images: give the .parquet files a folder of their own"
    if path.suffix == SIDECAR_SUFFIX:
        image = stems.get(path.with_suffix("").as_posix())
        if image:
            return f"the metadata file gives {image} its caption, which comes before a sidecar"
        return f"a caption file with no image of its name beside it ({path.stem}.png, {path.stem}.jpg, ...): name it as its image"
    if path.suffix.lower() == SIDECAR_SUFFIX:
        return f"a caption sidecar is read as {path.stem}{SIDECAR_SUFFIX} (lower case): rename it"
    return f"not an image ingest reads ({', '.join(sorted(IMAGE_SUFFIXES))}): convert it to PNG or JPEG, or remove it"


# --- parquet / Hugging Face datasets rows -------------------------------------------------------------------


def _named_file(name: str, roots: tuple[Path, ...]) -> tuple[bytes | None, tuple[str, str] | None]:
    """A path cell: read only when it is absolute and inside one of `roots` (a dataset cache); otherwise a skip."""
    shown = name if len(name) <= 120 else name[:117] + "..."
    path = Path(name)
    for root in roots if path.is_absolute() else ():
        try:
            return read_inside(root, path, MAX_FILE_BYTES), None
        except Escape as exc:
            if exc.kind != "outside_source":
                return None, (exc.kind, f"{shown}: {exc.reason}")
    if not roots:
        reason = (
            f"the row carries no image bytes, only the name {shown!r}; names in a parquet file are data and are never "
            "opened on this machine: export the dataset with the images embedded"
        )
        return None, ("no_image_bytes", reason)
    where = " or ".join(str(root) for root in roots)
    return None, ("outside_source", f"the row names {shown!r}, which is not a file inside {where}; not opened")


def _image_bytes(value: Any, roots: tuple[Path, ...]) -> tuple[bytes | None, tuple[str, str] | None]:
    """An image cell (bytes, {bytes, path} struct, a path string, or a decoded PIL image) -> bytes, or a skip.

    Bytes always come from the cell itself; a cell that only names a file is read only from inside `roots`
    (the dataset cache a hub download extracted into), and never for a parquet source (`roots` empty).
    """
    if hasattr(value, "save") and hasattr(value, "mode"):  # already decoded (a streaming dataset without features)
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue(), None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is not None and not isinstance(data, bytes | bytearray):
            return None, ("not_an_image", f"the image cell's bytes field holds {type(data).__name__}, not binary data")
        if data:
            return bytes(data), None
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return (bytes(value), None) if value else (None, ("empty_file", "empty image cell (0 bytes)"))
    if isinstance(value, str) and value:
        return _named_file(value, roots)
    return None, ("empty_file", "no image in this row")


def _row_item(row: dict, original_id: str, image_col: str, text_col: str | None, roots: tuple[Path, ...]) -> Item:
    data, skip = _image_bytes(row.get(image_col), roots)
    return Item(original_id, data, _clean_text(row.get(text_col)) if text_col else None, skip)


def _columns(columns: list[str], where: str) -> tuple[str, str | None, str | None]:
    image_col = _pick(columns, IMAGE_COLUMNS)
    if image_col is None:
        raise KoloraError(f"{where} has no image column (looked for {', '.join(IMAGE_COLUMNS)}; found {', '.join(columns)})")
    return image_col, _pick(columns, TEXT_COLUMNS), _pick(columns, ID_COLUMNS)


def _parquet_files(path: Path) -> Iterator[tuple[str, Path | Escape]]:
    """(label, real path or why it is refused) of each parquet file of the source, in name order."""
    if not path.is_dir():
        yield path.name, path
        return
    root = path.resolve()
    entries = sorted((e for e in walk_inside(root) if is_parquet_name(e.rel)), key=lambda e: e.rel)
    if not entries:
        raise KoloraError(f"ingest.source {path} holds no .parquet files")
    for entry in entries:
        yield entry.rel, entry.real if entry.real is not None else entry.escape


def iter_parquet(path: Path) -> Iterator[SourceEvent]:
    """Rows of a parquet file or folder; images come from the cells' bytes only (path cells are never opened)."""
    import pyarrow.parquet as pq

    for label, file in _parquet_files(path):
        if isinstance(file, Escape):
            yield Problem(label, file.kind, file.reason)
            continue
        try:
            pf = pq.ParquetFile(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            yield Problem(label, "bad_parquet", f"cannot read the parquet file: {exc}")
            continue
        image_col, text_col, id_col = _columns(pf.schema_arrow.names, f"parquet file {label}")
        wanted = [c for c in (image_col, text_col, id_col) if c]
        row_number = 0
        for batch in _batches(pf, wanted):
            if isinstance(batch, Exception):
                why = f"{type(batch).__name__}: {batch}"
                reason = f"cannot read the parquet file past row {row_number} ({why}); the rows before it are read"
                yield Problem(label, "bad_parquet", reason)
                break
            for row in batch.to_pylist():
                original_id = str(row[id_col]) if id_col and row.get(id_col) is not None else f"{label}:{row_number}"
                yield _row_item(row, original_id, image_col, text_col, ())
                row_number += 1


def _batches(pf: Any, columns: list[str]) -> Iterator[Any]:
    """The file's record batches, then the error if a page cannot be decoded: a file whose footer reads can still hold
    damaged data (pyarrow raises OSError, ArrowInvalid, ... only when it reaches it)."""
    batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged page
            yield exc
            return
        yield batch


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


def iter_hf_rows(ds: Any, where: str, roots: tuple[Path, ...] = ()) -> Iterator[SourceEvent]:
    """Rows of a datasets.Dataset (or what MsDataset.load returned), images left undecoded.

    A row whose image is only a file name is read when that file lies inside `roots` (where the download
    extracted the dataset), never elsewhere.
    """
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
        yield _row_item(row, original_id, image_col, text_col, roots)


def iter_modelscope(dataset_id: str, config: IngestConfig, cache_dir: Path | None = None) -> Iterator[SourceEvent]:
    cache_dir = cache_dir or default_cache_dir()
    ds = load_modelscope(dataset_id, config, cache_dir)
    yield from iter_hf_rows(ds, f"modelscope://{dataset_id}", _dataset_roots(dataset_id, cache_dir))


def _dataset_roots(dataset_id: str, cache_dir: Path) -> tuple[Path, ...]:
    """Where files named by a hub dataset's rows may lie: its cache dir, and the folder of a local path or glob."""
    roots = [cache_dir.resolve()]
    local = Path(dataset_id.split("*", 1)[0])
    if local.is_absolute() or local.exists():
        roots.append((local if local.is_dir() else local.parent).resolve())
    return tuple(roots)


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
        if path.suffix.lower() != PARQUET_SUFFIX:
            raise KoloraError(f"ingest.source {path} is a file but not .parquet: pass its folder, or a parquet export")
        return Source(f"parquet:{path.name}", "parquet", iter_parquet(path))
    names = [entry.rel for entry in walk_inside(path.resolve())]
    if not any(is_image_name(n) for n in names) and any(is_parquet_name(n) for n in names):
        return Source(f"parquet:{path.name}", "parquet", iter_parquet(path))
    return Source(f"folder:{path.name}", "folder", iter_folder(path))
