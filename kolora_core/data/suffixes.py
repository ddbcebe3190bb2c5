"""The file kinds a folder source is read by, apart from the readers (`sources` pulls the hub's client), so that
`kolora upload` refuses a folder in which ingest would find nothing by the same rules, without loading any of it."""

from __future__ import annotations

from pathlib import PurePosixPath

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PARQUET_SUFFIX = ".parquet"


def is_image_name(rel: str) -> bool:
    """An image a folder source reads: by suffix, any case; hidden files (macOS's `._a.png`) are not."""
    name = PurePosixPath(rel).name
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")


def is_parquet_name(rel: str) -> bool:
    """A parquet file a folder source reads (the suffix exactly as Hugging Face exports write it)."""
    return rel.endswith(PARQUET_SUFFIX)
