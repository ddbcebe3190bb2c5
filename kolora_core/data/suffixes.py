"""The file kinds a folder source is read by, apart from the readers (`sources` pulls the hub's client), so that
`kolora upload` can refuse a folder in which ingest would find nothing without loading any of it."""

from __future__ import annotations

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PARQUET_SUFFIX = ".parquet"
