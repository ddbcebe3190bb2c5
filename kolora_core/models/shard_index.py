"""The shard indexes of a folder that transformers' `from_pretrained` loads: every name they give is a file of the folder.

A sharded checkpoint's `*.index.json` (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) maps each
tensor to the file that holds it, and transformers opens `<folder>/<name>` for every name its weight_map lists:
`../x` or an absolute path loads a file outside the folder as the model's weights, without a word, and a missing
one fails deep inside loading. The folders kolora loads this way (the base model's text encoder, the evaluation
scorers) come through the artifact store, and their manifest checks the files it lists, not the names an index
gives; so each folder is checked here, before transformers reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.relative_names import is_relative_name

_REDO = "rerun fetch-models"


def _is_file(path: Path) -> bool:
    """`Path.is_file`, False where the name cannot be a file (`Path.is_file` raises on a name too long for the system)."""
    try:
        return path.is_file()
    except OSError:
        return False


def check_shard_indexes(folder: Path) -> None:
    """Refuse a shard index in `folder` that is not a JSON object with a weight_map, or whose weight_map names
    anything but a file inside `folder`: one line naming the index, the name and the tensor."""
    for index in sorted(folder.glob("*.index.json")):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (OSError, ValueError, AttributeError):  # unreadable, not UTF-8 or JSON, not an object
            weight_map = None
        if not isinstance(weight_map, dict):
            raise KoloraError(f"{index} is not a shard index (a JSON object with a 'weight_map' mapping): {_REDO}")
        for tensor, shard in weight_map.items():
            if not (isinstance(shard, str) and is_relative_name(shard) and _is_file(folder / shard)):
                raise KoloraError(f"{index}: weight_map names {shard!r} for {tensor}, which is not a file in {folder}: {_REDO}")
