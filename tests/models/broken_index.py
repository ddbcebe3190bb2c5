"""Shard indexes broken the ways a folder from the artifact store can break them, for every folder kolora loads
with transformers' `from_pretrained` (the text encoder, the scorers): one helper, so each loader is tested
against the same cases and the same message (`kolora_core.models.shard_index`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

# outside / absolute: a copy of a real shard outside the folder (the same bytes, so transformers loads it);
# missing: a name with no file; too long: a name no file system takes; not an index: JSON without a weight_map
BROKEN = ("outside", "absolute", "missing", "too long", "not an index")


def break_index(index: Path, how: str, outside: Path) -> str:
    """Rewrite `index` so that its first shard is named `how` (one of BROKEN; `outside` is a directory outside the
    folder that gets the shard's copy); returns the full-line pattern of the error that refuses it."""
    folder = index.parent
    data = json.loads(index.read_text(encoding="utf-8"))
    tensor, shard = next(iter(data["weight_map"].items()))
    copy = outside / shard
    shutil.copyfile(folder / shard, copy)
    named = {
        "outside": os.path.relpath(copy, folder),
        "absolute": str(copy),
        "missing": "model-00099-of-00099.safetensors",
        "too long": f"{'x' * 300}.safetensors",
    }.get(how, shard)
    data["weight_map"] = {key: named if value == shard else value for key, value in data["weight_map"].items()}
    index.write_text(json.dumps(data) if how != "not an index" else "[]", encoding="utf-8")
    if how == "not an index":
        message = re.escape("is not a shard index (a JSON object with a 'weight_map' mapping)")
    else:
        message = re.escape(f"weight_map names {named!r} for {tensor}, which is not a file in {folder}")
    return rf"^{re.escape(str(index))}:? {message}: rerun fetch-models$"


def misplace_tensor(index: Path) -> str:
    """Rewrite `index` so that its first tensor is sent to another shard of the folder, one that does not hold it
    (every name still a file of the folder); returns the tensor's name."""
    data = json.loads(index.read_text(encoding="utf-8"))
    tensor, shard = next(iter(data["weight_map"].items()))
    data["weight_map"][tensor] = next(other for other in data["weight_map"].values() if other != shard)
    index.write_text(json.dumps(data), encoding="utf-8")
    return tensor
