"""The fast engine's step: diffsynth's objective on cached encodings, a batch of images per UNet call.

`FastLoRAModule.forward` is `LightningModelForT2ILoRA.training_step` from the point where the
seed has its latents and prompt embeddings: the same EnhancedDDIM scheduler (1100 train
timesteps), `add_noise` arithmetic, epsilon target, `SDXLUNet.forward` with
`add_time_id = [H, W, 0, 0, H, W]` and MSE in fp32 (options: per-image min-SNR weights, `snr_weights`;
other peft adapters, `adapter_config`). The random draws (noise, then timestep) are made
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
from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, inject_adapter_in_model

from kolora_core.config import TrainConfig
from kolora_core.lora.format import is_adapter_param
from kolora_core.training.sampling import NUM_TRAIN_TIMESTEPS
from kolora_core.training.step import to_device


def kolors_train_scheduler() -> EnhancedDDIMScheduler:
    """What the seed's pipeline uses: Kolors' scheduler with `set_timesteps(1100)` (ids 0..1099 -> 1099..0)."""
    scheduler = EnhancedDDIMScheduler(beta_end=0.014, num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    scheduler.set_timesteps(NUM_TRAIN_TIMESTEPS)
    return scheduler


def adapter_config(train: TrainConfig) -> PeftConfig:
    """The peft config of `train.lora_variant` (LoRA is the seed's `LoraConfig`; DoRA is LoRA with `use_dora`)."""
    targets = list(train.lora_target_modules)
    if train.lora_variant == "loha":
        return LoHaConfig(r=train.lora_rank, alpha=train.lora_alpha, target_modules=targets)
    if train.lora_variant == "lokr":
        return LoKrConfig(r=train.lora_rank, alpha=train.lora_alpha, target_modules=targets)
    return LoraConfig(
        r=train.lora_rank,
        lora_alpha=train.lora_alpha,
        init_lora_weights=True if train.init_lora_weights == "kaiming" else train.init_lora_weights,
        target_modules=targets,
        use_dora=train.lora_variant == "dora",
    )


def inject_lora(unet: torch.nn.Module, train: TrainConfig) -> torch.nn.Module:
    """`LightningModelForT2ILoRA.add_lora_to_model`: peft LoRA on the targets, trainables upcast to fp32.

    Seeded with `train.seed` so every engine and every DDP rank starts from the same LoRA. Other variants go
    through the same peft call with their own config (`adapter_config`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        unet = inject_adapter_in_model(adapter_config(train), unet)
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.to(torch.float32)
    return unet


def freeze_except_lora(unet: torch.nn.Module) -> None:
    """The seed's `freeze_parameters` for the UNet: only the adapter trains, UNet in train mode."""
    for name, param in unet.named_parameters():
        param.requires_grad_(is_adapter_param(name))
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


def snr_weights(scheduler: EnhancedDDIMScheduler, timestep_ids: torch.Tensor, gamma: float, batch: int) -> torch.Tensor:
    """(batch,) min-SNR-gamma loss weights min(SNR(t), gamma) / SNR(t) for epsilon prediction, SNR = a / (1 - a)
    with a = alphas_cumprod[t] (Hang et al. 2023; diffusers' `compute_snr` recipe), on the CPU."""
    alphas = torch.tensor([float(scheduler.alphas_cumprod[int(scheduler.timesteps[int(i)])]) for i in timestep_ids.tolist()])
    snr = alphas / (1 - alphas)
    weights = torch.minimum(snr, torch.full_like(snr, gamma)) / snr
    return weights.expand(batch).contiguous() if weights.numel() == 1 else weights


class FastLoRAModule(torch.nn.Module):
    """The UNet with LoRA and the seed's loss; `forward` returns the step's loss.

    Nothing in `forward` waits for the host: `add_time_id` comes with the batch from the cache (the seed's constant
    [H, W, 0, 0, H, W], or each image's own size and crop with buckets), so the step can run ahead and be
    graph-captured. With `weights` (min-SNR-gamma) the loss is the weighted mean of the per-image MSEs; without it
    the plain MSE over the batch, the seed's.
    """

    def __init__(self, unet: SDXLUNet, gradient_checkpointing: bool) -> None:
        super().__init__()
        self.unet = unet
        self.gradient_checkpointing = gradient_checkpointing

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        add_text_embeds: torch.Tensor,
        target: torch.Tensor,
        add_time_id: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        noise_pred = self.unet(
            noisy_latents,
            timestep=timesteps.float(),
            encoder_hidden_states=encoder_hidden_states,
            add_text_embeds=add_text_embeds,
            add_time_id=add_time_id,
            use_gradient_checkpointing=self.gradient_checkpointing,
        )
        if weights is None:
            return torch.nn.functional.mse_loss(noise_pred.float(), target.float())
        per_image = torch.nn.functional.mse_loss(noise_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_image * weights.float()).mean()
