"""The file kinds a folder source is read by, apart from the readers (`sources` pulls the hub's client), so that
`kolora upload` refuses a folder in which ingest would find nothing by the same rules, without loading any of it."""

from __future__ import annotations

from pathlib import PurePosixPath

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PARQUET_SUFFIX = ".parquet"


def is_hidden(rel: str) -> bool:
    """A name a folder source never reads: a dot file (macOS's `._a.png`, `.DS_Store`) or anything in a dot folder
    (`.ipynb_checkpoints/`, `.thumbnails/`, `.git/`: copies and thumbnails of the images, not more of them), as the
    Hugging Face imagefolder loader skips them."""
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def is_image_name(rel: str) -> bool:
    """An image a folder source reads: by suffix, any case, and not hidden."""
    return PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES and not is_hidden(rel)


def is_parquet_name(rel: str) -> bool:
    """A parquet file a folder source reads (the suffix exactly as Hugging Face exports write it), not hidden."""
    return rel.endswith(PARQUET_SUFFIX) and not is_hidden(rel)
