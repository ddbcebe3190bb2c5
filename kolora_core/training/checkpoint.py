"""Resumable training states: written atomically every `train.checkpoint_every` steps, last two kept.

A state holds the LoRA tensors, the optimizer state (AdamW moments and step counts), the AMP grad
scaler, the optimizer step, the loss history, the global RNG states and a fingerprint of everything
that must not change between the interrupted run and its rerun. The data position and the step's
random draws need no state: they are functions of (seed, step) (`sampling.py`).

The directory is the train stage's resumable output `--checkpoints` (`kolora_core.stages`: `<--lora>.checkpoints` by default,
`/kolora/outputs/checkpoints` in a pod, uploaded after a failed attempt and given back to the retry), or
`train.checkpoint_dir`. Each file is written to a temp name, flushed and renamed, so a kill mid-write leaves
the previous state intact; a rerun loads the newest state that reads back.

A state file is safetensors + JSON (`state_file.py`), never a pickle: on Argo it comes back from the
bucket, and loading it must not run code. A file that does not load as one (torn, foreign, a pickle) is
skipped with one line, and the next older state is tried.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError
from kolora_core.training.state_file import load_state, save_state

log = logging.getLogger("kolora.train")
PREFIX, SUFFIX = "step-", ".safetensors"
KEEP = 2
_STATE_KEYS = {"lora", "optimizer", "precision", "history", "fingerprint", "step", "rng"}
# Fields that may change between a crash and its rerun without changing what the steps compute.
_FREE_FIELDS = {
    "steps",
    "num_workers",
    "checkpoint_every",
    "checkpoint_dir",
    "keep_checkpoints",
    "log_every",
    "sigterm_grace_s",
    "seed_compat",
    "compile",
    "cuda_graphs",  # the same kernels replayed
    "compile_cache_dir",
    "gradient_checkpointing",  # recomputation, same numbers: an OOM'd run may resume with it on
    "devices",  # with batch_size and gradient_accumulation: only their product, the images of one optimizer step,
    "batch_size",  # shapes a step (fingerprinted below)
    "gradient_accumulation",
    "validation_every",  # validation renders, TensorBoard and the export files do not touch the training state
    "validation_prompts",
    "validation_steps",
    "tensorboard",
    "exports",
}


def checkpoint_dir(train: TrainConfig, resumable: Path) -> Path:
    """`train.checkpoint_dir`, or else the stage's resumable `--checkpoints` directory."""
    if train.checkpoint_dir:
        return Path(train.checkpoint_dir)
    return resumable


def fingerprint(train: TrainConfig, dataset_sha256: str, base_model_sha256: str) -> dict[str, Any]:
    """What a state was trained with; a rerun with anything else here must not continue from it.

    Devices may change if the global batch does not (8 GPUs x 2 resumes on 4 GPUs x 4): each step
    draws its global batch from (seed, step) and the ranks split it.
    """
    fields = {k: v for k, v in train.model_dump(mode="json").items() if k not in _FREE_FIELDS}
    fields["global_batch"] = train.batch_size * train.devices * train.gradient_accumulation
    return {"train": fields, "dataset_sha256": dataset_sha256, "base_model_sha256": base_model_sha256}


def _path(directory: Path, step: int) -> Path:
    return directory / f"{PREFIX}{step:08d}{SUFFIX}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete state files, newest first (temp files of an interrupted write are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"), reverse=True)


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """The global RNGs as saved (for code outside kolora's seeded draws); CUDA only on as many GPUs."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` for `step` atomically, then delete all but the newest `KEEP` states."""
    directory.mkdir(parents=True, exist_ok=True)
    final = _path(directory, step)
    tmp = final.with_name(final.name + ".tmp")
    save_state(tmp, {**state, "step": step, "rng": rng_states()})
    tmp.replace(final)
    for old in list_checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(f"{PREFIX}*{SUFFIX}.tmp"):
        stale.unlink(missing_ok=True)
    return final


def load_latest(directory: Path, expected: dict[str, Any], announce: bool = True) -> dict[str, Any] | None:
    """The newest readable state whose fingerprint matches, or None to start from step 0; `announce` logs the resume
    (off for the early settings check, which the real load repeats).

    A state from a different configuration is an error, not a silent fresh start: the user decides
    whether to delete it (`rm -r <dir>`) or to restore the old settings.
    """
    for path in list_checkpoints(directory):
        try:
            state = load_state(path)
            missing = sorted(_STATE_KEYS - set(state))
            if missing:
                raise ValueError(f"no {', '.join(missing)} in it")
        except Exception as exc:  # noqa: BLE001 - a half-written, corrupt or foreign file: fall back to the older one
            reason = " ".join(str(exc).split())[:300]
            log.warning("checkpoint %s is unreadable (%s: %s); trying an older one", path, type(exc).__name__, reason)
            continue
        if state.get("fingerprint") != expected:
            changed = _differences(state.get("fingerprint") or {}, expected)
            raise KoloraError(
                f"checkpoint {path} was written by a run with other settings ({', '.join(changed)}): "
                f"delete {directory} to start over, or set those settings back to resume"
            )
        if announce:
            log.info("resuming from %s (step %d)", path, state["step"])
        return state
    return None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changed = [
        f"train.{k}"
        for k in sorted(set(old.get("train", {})) | set(new["train"]))
        if old.get("train", {}).get(k) != new["train"].get(k)
    ]
    changed += [k for k in ("dataset_sha256", "base_model_sha256") if old.get(k) != new.get(k)]
    return changed or [json.dumps(new)[:80]]


def remove_checkpoints(directory: Path) -> None:
    if directory.is_dir():
        shutil.rmtree(directory)
