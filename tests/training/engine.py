"""A fast engine on the tiny models in this process, for tests that look inside a step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric import Fabric

from kolora_core.config import load_config
from kolora_core.data.layout import read_trainset
from kolora_core.training.run import FastEngine, TrainJob


def fast_engine(models: Path, trainset: Path, out: Path, **train: Any) -> FastEngine:
    """`FastEngine` of the smoke profile with `train.<key>` overrides, on the CPU in 32-true."""
    config = load_config("smoke", overrides={f"train.{k}": v for k, v in {"num_workers": 0, **train}.items()})
    out.mkdir(parents=True, exist_ok=True)
    job = TrainJob(config, trainset, read_trainset(trainset), models, out, out / "checkpoints", "data", "base")
    return FastEngine(Fabric(accelerator="cpu", devices=1, precision="32-true"), job)
