"""Checkpoint files are safetensors + JSON: the training state round-trips exactly, and nothing in one can run code."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kolora_core.training import checkpoint as ckpt
from kolora_core.training.state_file import STATE_KEY, load_state, save_state


class Payload:
    """What an attacker uploads as a checkpoint: unpickling it creates `marker` (it would run any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def training_state() -> dict:
    """A real AdamW + GradScaler state after one step (int keys, tuples, 0-d tensors), the RNGs and a history."""
    weights = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([weights], lr=1e-4)
    weights.sum().backward()
    optimizer.step()
    return {
        "lora": {"a.lora_A.default.weight": weights.detach().clone()},
        "optimizer": optimizer.state_dict(),
        "precision": torch.amp.GradScaler("cpu", enabled=True).state_dict(),
        "history": [[1, 0.25, 1e-4, 0.5, 2.0]],
        "fingerprint": {"train": {"seed": 42}, "dataset_sha256": "d", "base_model_sha256": "b"},
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_the_training_state_round_trips_exactly(tmp_path: Path) -> None:
    state = training_state() | {"rng": ckpt.rng_states(), "step": 3}
    save_state(tmp_path / "s.safetensors", state)
    loaded = load_state(tmp_path / "s.safetensors")
    assert same(state, loaded)
    assert isinstance(next(iter(loaded["optimizer"]["state"])), int) and isinstance(loaded["rng"]["python"], tuple)
    expected = (torch.rand(3), np.random.rand(), random.random())
    ckpt.restore_rng_states(loaded["rng"])
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_a_pickled_checkpoint_is_skipped_not_executed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "checkpoints"
    state = training_state()
    ckpt.save_checkpoint(directory, 2, state)
    marker = tmp_path / "code-ran"
    torch.save({"lora": Payload(marker)}, directory / f"{ckpt.PREFIX}00000009{ckpt.SUFFIX}")  # newest, as a pickle
    with caplog.at_level(logging.WARNING, logger="kolora.train"):
        loaded = ckpt.load_latest(directory, state["fingerprint"])
    assert not marker.exists(), "loading a checkpoint ran code from it"
    assert loaded is not None and loaded["step"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "00000009" in warnings[0] and "\n" not in warnings[0] and "trying an older one" in warnings[0]


@pytest.mark.parametrize(
    "document",
    [
        None,  # a safetensors file that is not a kolora state
        json.dumps({"lora": {"__reduce__": ["os.system", "id"]}}),  # a tag outside the allow-list
        json.dumps({"rng": {"__ndarray__": [1], "dtype": "|O"}}),  # an object array
        json.dumps({"lora": {"__tensor__": "nope"}}),  # a tensor the file does not hold
        json.dumps({"step": 1}),  # reads back, but is not a whole training state
    ],
)
def test_a_foreign_or_incomplete_state_file_is_skipped(tmp_path: Path, document: str | None) -> None:
    directory = tmp_path / "checkpoints"
    ckpt.save_checkpoint(directory, 2, training_state())
    save_file(
        {"x": torch.zeros(1)}, str(directory / f"{ckpt.PREFIX}00000004{ckpt.SUFFIX}"), metadata=document and {STATE_KEY: document}
    )
    loaded = ckpt.load_latest(directory, training_state()["fingerprint"])
    assert loaded is not None and loaded["step"] == 2


def test_a_torn_write_is_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    ckpt.save_checkpoint(directory, 2, training_state())
    newest = ckpt.save_checkpoint(directory, 4, training_state())
    newest.write_bytes(newest.read_bytes()[:100])
    assert ckpt.load_latest(directory, training_state()["fingerprint"])["step"] == 2
