"""The train stage: the seed's LoRA recipe on a model directory and a training set, to a LoRA file."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import lightning as pl
import torch
from diffsynth.data.simple_text_image import TextImageDataset

from kolora_core.config import RunConfig, dump_config
from kolora_core.datasets import read_trainset, trainset_fingerprint
from kolora_core.device import resolve_device
from kolora_core.errors import KoloraError
from kolora_core.lora import LORA_FILE, lora_state_from_model, save_lora
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.training.progress import ProgressLog
from kolora_core.training.seed_module import SeedLoRAModule

log = logging.getLogger("kolora.train")


def _training_dtype(precision: str) -> torch.dtype:
    """As train_kolors_lora.py: frozen weights in fp32 only for full-precision runs, else fp16."""
    return torch.float32 if precision in ("32", "32-true") else torch.float16


def run_train(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    train = config.train
    trainset, out = inputs["trainset"], outputs["lora"]
    rows = read_trainset(trainset)
    model_dir = ModelDir(inputs["models"])
    device = resolve_device(config.device)
    if device == "cpu" and train.precision in ("16-mixed",):
        raise KoloraError("train.precision 16-mixed needs a GPU; on CPU use 32-true or bf16-mixed")
    pl.seed_everything(train.seed, workers=True, verbose=False)
    log.info(
        "training on %d images, %d steps, rank %d alpha %s, %s", len(rows), train.steps, train.lora_rank, train.lora_alpha, device
    )

    module = SeedLoRAModule(
        load_model_manager(model_dir, "cpu", _training_dtype(train.precision)), train, _training_dtype(train.precision)
    )
    dataset = TextImageDataset(
        str(trainset),
        steps_per_epoch=train.steps * train.batch_size,
        height=train.resolution,
        width=train.resolution,
        center_crop=train.center_crop,
        random_flip=train.random_flip,
    )
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, batch_size=train.batch_size, num_workers=train.num_workers)
    progress = ProgressLog(out / "train_log.csv", train.steps, train.batch_size)
    with tempfile.TemporaryDirectory(prefix="kolora-train-") as scratch:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision=train.precision,
            default_root_dir=scratch,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[progress],
        )
        try:
            trainer.fit(module, loader)
        except torch.cuda.OutOfMemoryError:
            raise KoloraError(
                f"GPU out of memory at train.resolution {train.resolution}, train.batch_size {train.batch_size}: "
                "lower train.batch_size or enable train.gradient_checkpointing"
            ) from None

    summary = {
        "steps": train.steps,
        "images": len(rows),
        "seconds": round(progress.seconds, 2),
        "images_per_second": round(train.steps * train.batch_size / progress.seconds, 3) if progress.seconds else None,
        "first_loss": progress.losses[0] if progress.losses else None,
        "final_loss": progress.losses[-1] if progress.losses else None,
        "device": device,
    }
    save_lora(
        out / LORA_FILE,
        lora_state_from_model(module.pipe.denoising_model()),
        train.lora_rank,
        train.lora_alpha,
        {
            "targets": train.lora_target_modules,
            "base_model_sha256": model_dir.fingerprint(),
            "dataset_sha256": trainset_fingerprint(trainset, rows),
            "steps": train.steps,
            "config": dump_config(config),
        },
    )
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("%s written (final loss %s)", LORA_FILE, summary["final_loss"])
