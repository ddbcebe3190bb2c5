"""Training progress a person can follow in a pod log, and a loss CSV kept with the LoRA.

Plain log lines instead of a tqdm bar: Argo and `kubectl logs` show carriage-return bars as noise.
Losses stay on the device until a log line, a checkpoint or the end needs them, so the step loop
never waits for the GPU just to print; a non-finite loss is then reported with its own step.

With `train.tensorboard` the same rows (and the gradient norm, and validation images) also go to TensorBoard
event files in `<lora output>/tensorboard/`, written by Lightning Fabric's `TensorBoardLogger` (the logger of the
framework the loop already runs on). A resumed run starts a fresh output directory, so it writes the history
it resumed with first: the event files then cover every step once, as the CSV does.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kolora_core.errors import KoloraError

log = logging.getLogger("kolora.train")
CSV_COLUMNS = ["step", "loss", "lr", "seconds", "images_per_second"]
NAN_HINT = (
    "with 16-mixed use the sdxl-vae-fp16-fix VAE, or set train.precision to bf16-mixed / 32-true, or lower train.learning_rate"
)


TENSORBOARD_DIR = "tensorboard"


class TensorBoard:
    """Scalars and images of one run in `<out>/tensorboard/` (rank 0 only), through Fabric's TensorBoardLogger."""

    def __init__(self, out: Path) -> None:
        from lightning.fabric.loggers import TensorBoardLogger

        self.logger = TensorBoardLogger(root_dir=str(out), name=TENSORBOARD_DIR, version="")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.logger.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def image(self, tag: str, step: int, image: Image.Image) -> None:
        self.logger.experiment.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.logger.finalize("success")


class ProgressLog:
    """Step, loss, images/s and ETA every `every` steps; every step's loss and lr in `csv_path`.

    `history` rows are (step, loss, lr, seconds since the run's first step, images/s so far, grad norm or NaN);
    a resumed run starts from the checkpoint's history so the CSV covers every step once.
    """

    def __init__(
        self,
        csv_path: Path,
        total_steps: int,
        images_per_step: int,
        every: int = 10,
        history: list[list[float]] | None = None,
        writer: bool = True,
        board: TensorBoard | None = None,
    ) -> None:
        self.csv_path = csv_path
        self.writer = writer  # DDP: every rank checks the (all-reduced) loss, rank 0 alone logs and writes
        self.total = total_steps
        self.images_per_step = images_per_step
        self.every = every
        self.history: list[list[float]] = [list(r) for r in history or []]
        self._offset = self.history[-1][3] if self.history else 0.0
        self._first_step = int(self.history[-1][0]) if self.history else 0
        self._pending: list[tuple[int, torch.Tensor, float, float]] = []
        self._start = time.perf_counter()
        self.board = board
        for row in self.history:
            self._board_row(row)

    def _board_row(self, row: list[float]) -> None:
        if self.board is not None:
            step, loss, lr, _, rate, *norm = row
            self.board.scalars(
                int(step), {"loss": loss, "lr": lr, "images_per_second": rate, "grad_norm": (norm or [math.nan])[0]}
            )

    def images(self, step: int, images: list[Image.Image]) -> None:
        """Validation images of `step` to TensorBoard (their files are the engine's business)."""
        if self.board is not None:
            for i, image in enumerate(images):
                self.board.image(f"validation/{i}", step, image)

    def record(self, step: int, result: torch.Tensor, lr: float) -> None:
        """Note a finished optimizer step (1-based) with its [loss, grad norm]; flushes every `every` steps and at the last."""
        self._pending.append((step, result.detach(), lr, time.perf_counter() - self._start))
        if step % self.every == 0 or step == self.total:
            self.flush()

    def flush(self) -> None:
        """Fetch pending losses (one device sync), check them, append to the history and log a line."""
        if not self._pending:
            return
        rows = torch.stack([r.float().reshape(-1) for _, r, _, _ in self._pending]).cpu().tolist()
        elapsed = time.perf_counter() - self._start  # the sync above waited for the GPU: true time
        for (step, _, lr, seconds), (value, *norm) in zip(self._pending, rows, strict=True):
            if not math.isfinite(value):
                self._pending = []
                if self.writer:
                    self.write_csv()
                raise KoloraError(f"loss became {value} at step {step}: {NAN_HINT}")
            rate = (step - self._first_step) * self.images_per_step / seconds if seconds > 0 else 0.0
            self.history.append([step, value, lr, round(self._offset + seconds, 3), round(rate, 3), *norm[:1]])
            self._board_row(self.history[-1])
        self._pending = []
        if not self.writer:
            return
        self.write_csv()
        step, value = self.history[-1][0], self.history[-1][1]
        done = step - self._first_step
        eta = (self.total - step) * elapsed / done if done else 0.0
        rate = done * self.images_per_step / elapsed if elapsed > 0 else 0.0
        log.info("step %d/%d loss %.4f  %.2f images/s  ETA %.0f s", step, self.total, value, rate, eta)

    def write_csv(self) -> None:
        with self.csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for step, loss, lr, seconds, rate, *_ in self.history:
                writer.writerow([int(step), f"{loss:.6f}", lr, f"{seconds:.3f}", f"{rate:.3f}"])

    @property
    def losses(self) -> list[float]:
        return [row[1] for row in self.history]

    @property
    def seconds(self) -> float:
        """Training seconds of this process (a resumed run counts from its resume)."""
        return time.perf_counter() - self._start
