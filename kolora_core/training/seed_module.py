"""The seed's LightningModule: diffsynth's `LightningModelForT2ILoRA`, set up as `train_kolors_lora.py` does.

The objective is diffsynth's own `training_step` (ChatGLM encodes the caption every step, VAE mean
x 0.13025, EnhancedDDIM with 1100 train timesteps, epsilon target, MSE), so the loss is the seed's
by construction. What kolora adds: models come from an already-loaded `ModelManager` (any model
directory, tiny or real), the LoRA initialisation is seeded with `train.seed` (as the fast
engine's, so both start from the same LoRA), and a non-finite loss stops training with the step
number. `train.engine: seed` trains with this module; the fast engine is proven against it
(`seed_compat.py`).
"""

from __future__ import annotations

import math
import warnings

import torch
from diffsynth import ModelManager, SDXLImagePipeline
from diffsynth.trainers.text_to_image import LightningModelForT2ILoRA

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError
from kolora_core.training.progress import NAN_HINT

# diffsynth's training_step calls self.log(); kolora's loop (and the seed-compat check) run it without a Trainer.
_NO_TRAINER = r".*`self.log\(\)` but the `self.trainer` reference is not registered"


class SeedLoRAModule(LightningModelForT2ILoRA):
    def __init__(self, manager: ModelManager, train: TrainConfig, dtype: torch.dtype) -> None:
        # auto is the seed's choice here: the seed always checkpointed
        super().__init__(learning_rate=train.learning_rate, use_gradient_checkpointing=train.gradient_checkpointing is not False)
        self.pipe = SDXLImagePipeline.from_model_manager(manager)
        self.pipe.scheduler.set_timesteps(1100)
        self.pipe.vae_encoder.to(dtype)
        self.freeze_parameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train.seed)
            self.add_lora_to_model(
                self.pipe.denoising_model(),
                lora_rank=train.lora_rank,
                lora_alpha=train.lora_alpha,
                lora_target_modules=",".join(train.lora_target_modules),
                init_lora_weights=train.init_lora_weights,
            )
        self.current_step: int | None = None  # set by kolora's loop: the 1-based step for error messages

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_TRAINER)
            loss = super().training_step(batch, batch_idx)
        if not math.isfinite(loss.item()):
            step = self.current_step if self.current_step is not None else self.global_step + 1
            raise KoloraError(f"loss became {loss.item()} at step {step}: {NAN_HINT}")
        return loss
