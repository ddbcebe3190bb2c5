"""The check-changes stage: would training now give the champion's LoRA again? (`jobs/check_changes.py`)

Unchanged means the trainset fingerprint AND the training identity (`kolora_core.training.identity`) equal
the ones the champion's release.json records; then the nightly (workflow parameter `on-unchanged: skip`)
ends "unchanged" without spending a GPU. Anything else, including no champion yet or a champion released
before kolora recorded these facts, is `changed`. Outputs: `training.txt` (the workflow's `training`
parameter: `changed` | `unchanged`) and `changes.json`, which says why (which fingerprint differs, and for
the training identity which config fields).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kolora_core.config import RunConfig
from kolora_core.data.layout import read_trainset, trainset_fingerprint
from kolora_core.evaluation.champion import CHAMPION_JSON, NONE, read_json
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.training.identity import differing_fields, training_identity, training_inputs

log = logging.getLogger("kolora.check-changes")
TRAINING_TXT = "training.txt"
CHANGES_JSON = "changes.json"
CHANGED, UNCHANGED = "changed", "unchanged"


def compare_with_champion(config: RunConfig, trainset: Path, champion_dir: Path) -> dict[str, Any]:
    """changes.json's content: `training` (changed/unchanged), a one-line `reason`, and both sides' fingerprints."""
    current = {
        "trainset_sha256": trainset_fingerprint(trainset, read_trainset(trainset)),
        "training_identity": training_identity(config),
    }
    record: dict[str, Any] = {"current": current, "champion": None, "differs": [], "fields": []}
    pointer = read_json(champion_dir / CHAMPION_JSON)
    if pointer.get("status") == NONE:
        return record | {"training": CHANGED, "reason": f"no champion of {config.name} yet: training"}
    release = read_json(champion_dir / RELEASE_MANIFEST)
    label = f"champion {release.get('name')} {release.get('version')}"
    theirs = {key: release.get(key) for key in current}
    record["champion"] = {"version": release.get("version"), **theirs}
    if None in theirs.values():
        return record | {"training": CHANGED, "reason": f"{label} records no training identity or trainset fingerprint"}
    record["differs"] = [key for key in current if current[key] != theirs[key]]
    if not record["differs"]:
        reason = f"trainset and training config equal {label}'s: training would give the same LoRA"
        return record | {"training": UNCHANGED, "reason": reason}
    if "training_identity" in record["differs"] and isinstance(release.get("training_inputs"), dict):
        record["fields"] = differing_fields(release["training_inputs"], training_inputs(config))
    what = {"trainset_sha256": "the trainset", "training_identity": "the training config"}
    changed = " and ".join(what[k] for k in record["differs"])
    fields = f" ({', '.join(record['fields'])})" if record["fields"] else ""
    verb = "differ" if len(record["differs"]) > 1 else "differs"
    return record | {"training": CHANGED, "reason": f"{changed} {verb} from {label}'s{fields}"}


def run_check_changes(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """`check-changes` stage work: changes.json and training.txt."""
    record = compare_with_champion(config, inputs["trainset"], inputs["champion"])
    out = outputs["changes"]
    (out / CHANGES_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / TRAINING_TXT).write_text(record["training"] + "\n", encoding="utf-8")
    log.info("training %s: %s", record["training"], record["reason"])
