"""The training identity: one hash naming everything in a run config that can change the trained LoRA.

Recorded by the train stage (train_summary.json, the LoRA file's metadata), carried into release.json by
publish, and compared by check-changes: a nightly whose trainset fingerprint AND training identity equal the
champion's would train the same LoRA again, so it ends "unchanged" without spending a GPU.

What counts (`training_inputs`): the whole `train` section except the fields in `OPERATIONAL` (how the
run is executed, never what it computes), the whole `models` section, ingest's `caption`/`trigger_word` and
filter's `ops`. New fields count until someone lists them as operational: an unknown knob costs one
needless retrain, while a knob wrongly left out would let a changed recipe pass as "unchanged".
`devices`, `compile` and `gradient_checkpointing` stay in: they change the batch split or the kernels, so
the bytes of the LoRA (if not its quality) can differ. The data itself is named separately by the trainset
fingerprint (`kolora_core.data.layout.trainset_fingerprint`); the base model's weights are not read here,
so `models.revision: null` ("latest") does not notice a new upstream release.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kolora_core.config import RunConfig

IDENTITY_FORMAT = "kolora-training-identity-v1"
# train fields that only say how the run is executed: workers, logging, checkpoints, the pre-training check
OPERATIONAL = frozenset(
    {"num_workers", "log_every", "checkpoint_every", "checkpoint_dir", "keep_checkpoints", "seed_compat"}
    # samples during training and TensorBoard logs watch the run; they never touch the LoRA
    | {"validation_every", "validation_prompts", "validation_steps", "tensorboard"}
)


def training_inputs(config: RunConfig) -> dict[str, Any]:
    """The config values the training identity is the hash of (JSON types only), for reports that say what differs."""
    train = {k: v for k, v in config.train.model_dump(mode="json").items() if k not in OPERATIONAL}
    return {
        "format": IDENTITY_FORMAT,
        "train": train,
        "models": config.models.model_dump(mode="json"),
        "ingest": {"caption": config.ingest.caption, "trigger_word": config.ingest.trigger_word},
        "filter": {"ops": config.filter.ops},
    }


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8 (the hash must not depend on dict order)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def identity_of(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


def training_identity(config: RunConfig) -> str:
    """sha256 of the canonical JSON of `training_inputs(config)`."""
    return identity_of(training_inputs(config))


def differing_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two `training_inputs` (what check-changes reports)."""
    paths = []
    for key in sorted(set(old) | set(new)):
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            paths += differing_fields(a, b, f"{path}.")
        elif a != b:
            paths.append(path)
    return paths
