"""The fast engine's step: diffsynth's objective on cached encodings, a batch of images per UNet call.

`FastLoRAModule.forward` is `LightningModelForT2ILoRA.training_step` from the point where the
seed has its latents and prompt embeddings: the same EnhancedDDIM scheduler (1100 train
timesteps), `add_noise` arithmetic, epsilon target, `SDXLUNet.forward` with
`add_time_id = [H, W, 0, 0, H, W]` and MSE in fp32. The random draws (noise, then timestep) are made
by the loop from per-step generators in the seed's order (`sampling.step_generators`). With one
timestep per batch the noising is the scheduler's arithmetic to the bit; with one per sample it is
the same arithmetic per sample (same rounding).

Timesteps enter `forward` as integers: Fabric casts floating inputs to the autocast dtype, and
bf16 cannot hold 1099.
"""

from __future__ import annotations

import math

import torch
from diffsynth.models.sdxl_unet import SDXLUNet
from diffsynth.schedulers import EnhancedDDIMScheduler
from peft import LoraConfig, inject_adapter_in_model

from kolora_core.config import TrainConfig
from kolora_core.training.sampling import NUM_TRAIN_TIMESTEPS
from kolora_core.training.step import to_device


def kolors_train_scheduler() -> EnhancedDDIMScheduler:
    """What the seed's pipeline uses: Kolors' scheduler with `set_timesteps(1100)` (ids 0..1099 -> 1099..0)."""
    scheduler = EnhancedDDIMScheduler(beta_end=0.014, num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    scheduler.set_timesteps(NUM_TRAIN_TIMESTEPS)
    return scheduler


def inject_lora(unet: torch.nn.Module, train: TrainConfig) -> torch.nn.Module:
    """`LightningModelForT2ILoRA.add_lora_to_model`: peft LoRA on the targets, trainables upcast to fp32.

    Seeded with `train.seed` so every engine and every DDP rank starts from the same LoRA.
    """
    config = LoraConfig(
        r=train.lora_rank,
        lora_alpha=train.lora_alpha,
        init_lora_weights=True if train.init_lora_weights == "kaiming" else train.init_lora_weights,
        target_modules=list(train.lora_target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        unet = inject_adapter_in_model(config, unet)
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.to(torch.float32)
    return unet


def freeze_except_lora(unet: torch.nn.Module) -> None:
    """The seed's `freeze_parameters` for the UNet: only LoRA trains, UNet in train mode."""
    for name, param in unet.named_parameters():
        param.requires_grad_(".lora_" in name)
    unet.train()


def cast_frozen(unet: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Frozen weights to `dtype`, LoRA weights stay fp32 (diffsynth's layout for mixed precision)."""
    for param in unet.parameters():
        if not param.requires_grad:
            param.data = param.data.to(dtype)
    return unet


def add_noise(
    scheduler: EnhancedDDIMScheduler, latents: torch.Tensor, noise: torch.Tensor, timestep_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy latents, integer timesteps on the latents' device) for CPU `timestep_ids`; no device sync.

    One id: the scheduler's own `add_noise` arithmetic (Python-float coefficients). Several: the same
    arithmetic per sample, each product rounded to the latents' dtype before the sum as there.
    """
    steps = [int(scheduler.timesteps[int(i)]) for i in timestep_ids.tolist()]
    timesteps = to_device(torch.tensor(steps, dtype=torch.long), latents.device)
    alphas = [scheduler.alphas_cumprod[t] for t in steps]
    if len(steps) == 1:
        return math.sqrt(alphas[0]) * latents + math.sqrt(1 - alphas[0]) * noise, timesteps
    shape = (-1,) + (1,) * (latents.dim() - 1)
    a = to_device(torch.tensor([math.sqrt(x) for x in alphas], dtype=torch.float32).view(shape), latents.device)
    b = to_device(torch.tensor([math.sqrt(1 - x) for x in alphas], dtype=torch.float32).view(shape), latents.device)
    return (a * latents).to(latents.dtype) + (b * noise).to(latents.dtype), timesteps


class FastLoRAModule(torch.nn.Module):
    """The UNet with LoRA and the seed's loss; `forward` returns the step's loss.

    Nothing in `forward` waits for the host: `add_time_id` is made once per batch shape and kept on the device
    (a list -> GPU tensor every step was a blocking copy), so the step can run ahead and be graph-captured.
    """

    def __init__(self, unet: SDXLUNet, gradient_checkpointing: bool) -> None:
        super().__init__()
        self.unet = unet
        self.gradient_checkpointing = gradient_checkpointing
        self._time_ids: dict[tuple[int, int, int, torch.device], torch.Tensor] = {}

    def time_ids(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (batch, height, width, device)
        if key not in self._time_ids:
            ids = torch.tensor([height * 8, width * 8, 0, 0, height * 8, width * 8], device=device)
            self._time_ids[key] = ids.repeat(batch)
        return self._time_ids[key]

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        add_text_embeds: torch.Tensor,
        target: torch.Tensor,
    ) -> torch.Tensor:
        batch, _, height, width = noisy_latents.shape
        noise_pred = self.unet(
            noisy_latents,
            timestep=timesteps.float(),
            encoder_hidden_states=encoder_hidden_states,
            add_text_embeds=add_text_embeds,
            add_time_id=self.time_ids(batch, height, width, noisy_latents.device),
            use_gradient_checkpointing=self.gradient_checkpointing,
        )
        return torch.nn.functional.mse_loss(noise_pred.float(), target.float())
