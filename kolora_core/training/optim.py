"""The fast engine's optimizer side: AdamW (torch or 8-bit), the learning-rate schedule, the EMA of the LoRA.

* `lr_factor` is the schedule as a pure function of the optimizer step, the same formulas as
  `transformers.get_scheduler` / diffusers' `get_scheduler` (constant, linear, cosine, each with linear warm-up;
  the first warm-up step runs at lr 0, as theirs). Being a function of the step, it needs no checkpoint state:
  a resumed run sets the lr of step k as the uninterrupted one did.
* `build_optimizer`: the seed's torch AdamW (fused on CUDA; `capturable` under CUDA graphs, with a tensor lr
  when the lr changes between steps, because a captured kernel keeps the float it was recorded with), or
  bitsandbytes' `AdamW8bit`, the 8-bit optimizer kohya (`AdamW8bit`), SimpleTuner (`bnb-adamw8bit`) and diffusers
  (`--use_8bit_adam`) use. It runs on current CUDA and, since bitsandbytes 0.47, on the CPU (the tests); torchao's
  `AdamW8bit` also runs on both but compiles its step with inductor (a minute per tensor shape on a CPU) and keeps
  its moments in tensor subclasses a safetensors checkpoint cannot hold. Every LoRA tensor gets 8-bit moments
  (`min_8bit_size=0`: on Kolors they all exceed bitsandbytes' 4096 default anyway).
* `LoRAEma`: torch's own EMA update (`swa_utils.get_ema_multi_avg_fn`: one `_foreach_lerp_`, device-only,
  so it runs inside a captured step), exported instead of the raw LoRA when `train.ema_decay` is set.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from kolora_core.config import TrainConfig

# Why the CUDA graph is off with an option, in the one log line that says so (None: the option replays fine).
GRAPH_BLOCKERS = {
    "adamw8bit": "bitsandbytes' 8-bit AdamW counts its steps on the host (a replay would repeat step 1's bias correction)",
}


def lr_factor(schedule: str, warmup: int, total: int, step: int) -> float:
    """The lr multiplier of optimizer step `step` (0-based) of `total`, as transformers' schedules compute it."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def schedule_varies(train: TrainConfig) -> bool:
    return train.lr_scheduler != "constant" or train.lr_warmup_steps > 0


def learning_rate(train: TrainConfig, step: int) -> float:
    return train.learning_rate * lr_factor(train.lr_scheduler, train.lr_warmup_steps, train.steps, step)


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's lr; a tensor lr (captured graphs) is filled in place, asynchronously, so the replay sees it."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def build_optimizer(
    train: TrainConfig, params: list[torch.nn.Parameter], device: torch.device, graphs: bool
) -> torch.optim.Optimizer:
    """`train.optimizer` over the LoRA parameters, set up for this device and for graph capture."""
    lr = learning_rate(train, 0)
    if train.optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=lr, min_8bit_size=0)
    if device.type != "cuda":
        return torch.optim.AdamW(params, lr=lr)
    # fused AdamW: one kernel for all LoRA tensors, and it takes GradScaler's scale and inf flag on the GPU
    tensor_lr = graphs and schedule_varies(train)
    return torch.optim.AdamW(params, lr=torch.tensor(lr, device=device) if tensor_lr else lr, fused=True, capturable=graphs)


class LoRAEma:
    """An exponential moving average of the LoRA tensors (fp32, on their device), keyed by parameter name."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        self.tensors = [p.detach().clone() for p in self.params]
        self._update = get_ema_multi_avg_fn(decay)

    def update(self) -> None:
        """ema = decay * ema + (1 - decay) * current, after each optimizer step."""
        self._update(self.tensors, [p.detach() for p in self.params], None)

    def state(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().float().cpu().contiguous() for n, t in zip(self.names, self.tensors, strict=True)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in zip(self.names, self.tensors, strict=True):
                tensor.copy_(state[name])
