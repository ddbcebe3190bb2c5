"""The training-set layout shared by the filter stage (writer) and the train stage (reader).

It is DiffSynth's own: `<root>/train/metadata.csv` (file_name,text) beside the images, which is what
`diffsynth.data.simple_text_image.TextImageDataset` reads.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from kolora_core.errors import KoloraError

TRAIN_DIR = "train"
METADATA = "metadata.csv"


def read_trainset(root: Path) -> list[tuple[str, str]]:
    """(file_name, text) rows; an empty or broken set fails here, before any model is loaded."""
    metadata = root / TRAIN_DIR / METADATA
    if not metadata.exists():
        raise KoloraError(f"training set {root} has no {TRAIN_DIR}/{METADATA}: pass the filter stage's trainset directory")
    with metadata.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file_name", "text"} <= set(reader.fieldnames):
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
