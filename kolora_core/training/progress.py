"""Training progress a person can follow in a pod log, and a loss CSV kept with the LoRA."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import lightning as pl

log = logging.getLogger("kolora.train")


class ProgressLog(pl.Callback):
    """Logs step, loss, images/s and ETA every `every` steps and writes every step's loss to CSV.

    Plain log lines instead of a tqdm bar: Argo and `kubectl logs` show carriage-return bars as noise.
    """

    def __init__(self, csv_path: Path, total_steps: int, batch_size: int, every: int = 10) -> None:
        self.csv_path = csv_path
        self.total = total_steps
        self.batch_size = batch_size
        self.every = every
        self.losses: list[float] = []
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        with self.csv_path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(["step", "loss", "lr", "seconds"])

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        step = trainer.global_step
        elapsed = time.perf_counter() - self._start
        self.losses.append(loss)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([step, f"{loss:.6f}", lr, f"{elapsed:.3f}"])
        if step % self.every == 0 or step == self.total:
            rate = step * self.batch_size / elapsed if elapsed else 0.0
            eta = (self.total - step) * elapsed / step if step else 0.0
            log.info("step %d/%d loss %.4f  %.2f images/s  ETA %.0f s", step, self.total, loss, rate, eta)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start
