"""The seed's LightningModule: diffsynth's `LightningModelForT2ILoRA`, set up as `train_kolors_lora.py` does.

The objective is diffsynth's own `training_step` (ChatGLM encodes the caption every step, VAE mean
x 0.13025, EnhancedDDIM with 1100 train timesteps, epsilon target, MSE), so the loss is the seed's
by construction. What kolora adds: models come from an already-loaded `ModelManager` (any model
directory, tiny or real), and a non-finite loss stops training with the step number.
"""

from __future__ import annotations

import math

import torch
from diffsynth import ModelManager, SDXLImagePipeline
from diffsynth.trainers.text_to_image import LightningModelForT2ILoRA

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError


class SeedLoRAModule(LightningModelForT2ILoRA):
    def __init__(self, manager: ModelManager, train: TrainConfig, dtype: torch.dtype) -> None:
        super().__init__(learning_rate=train.learning_rate, use_gradient_checkpointing=train.gradient_checkpointing)
        self.pipe = SDXLImagePipeline.from_model_manager(manager)
        self.pipe.scheduler.set_timesteps(1100)
        self.pipe.vae_encoder.to(dtype)
        self.freeze_parameters()
        self.add_lora_to_model(
            self.pipe.denoising_model(),
            lora_rank=train.lora_rank,
            lora_alpha=train.lora_alpha,
            lora_target_modules=",".join(train.lora_target_modules),
            init_lora_weights=train.init_lora_weights,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if not math.isfinite(loss.item()):
            raise KoloraError(
                f"loss became {loss.item()} at step {self.global_step + 1}: with fp16 use the sdxl-vae-fp16-fix VAE, "
                "or set train.precision to bf16-mixed / 32-true, or lower train.learning_rate"
            )
        return loss
