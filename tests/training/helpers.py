"""Shared helpers of the training tests: run the train CLI on the tiny models, read its outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from jobs.train import main as train_main
from kolora_core.lora.format import LORA_FILE, load_lora


def train(models: Path, trainset: Path, out: Path, *flags: str) -> int:
    """`python -m jobs.train --profile smoke ...` in-process; returns the exit code."""
    argv = [
        "--profile",
        "smoke",
        "--trainset",
        str(trainset),
        "--models",
        str(models),
        "--lora",
        str(out),
        "--train.num_workers",
        "0",
    ]
    return train_main([*argv, *flags])


# train_log.csv keeps 6 decimals, so two losses 1e-7 apart can be written one unit (1e-6) apart (CI: 1.250014 vs
# 1.250015 from batch 2 vs 2 accumulated micro-batches, 1.0000000001e-6): computations that agree to float rounding
# are compared within two units of what the file holds.
LOSS_CSV_TOLERANCE = 2e-6


def losses(out: Path) -> list[float]:
    return [float(row["loss"]) for row in csv.DictReader((out / "train_log.csv").read_text(encoding="utf-8").splitlines())]


def lora_max_diff(a: Path, b: Path) -> float:
    la, lb = load_lora(a / LORA_FILE), load_lora(b / LORA_FILE)
    assert la.tensors.keys() == lb.tensors.keys()
    return max(float((la.tensors[k] - lb.tensors[k]).abs().max()) for k in la.tensors)


def lora_b_max(out: Path) -> float:
    """How far training moved the LoRA: its B matrices start at zero."""
    lora = load_lora(out / LORA_FILE)
    return max(float(t.abs().max()) for k, t in lora.tensors.items() if "lora_B" in k)


def lora_changed(out: Path) -> bool:
    lora = load_lora(out / LORA_FILE)
    return any(float(t.abs().sum()) > 0 for k, t in lora.tensors.items() if "lora_B" in k) and all(
        torch.isfinite(t).all() for t in lora.tensors.values()
    )
