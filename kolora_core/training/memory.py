"""Will the chosen step fit on this GPU? Gradient checkpointing from free memory, and a clear error before step 1.

Checkpointing recomputes each block's forward during backward: the same numbers (it does not change the
recipe's math) for about a third more time and a fraction of the activation memory. The seed always turned it
on; kolora turns it on only when the step would not fit without it (`train.gradient_checkpointing: auto`).

The estimate is per training image, scaled from the full-size Kolors UNet measured on an H200 (peak minus
the 5 GiB resident, batch 8, 1024 px, docs/benchmarks.md): 7.45 GiB without checkpointing, 5.05 GiB with the
layers compiled (fused kernels keep fewer intermediates), 0.86 GiB with checkpointing.
Activations grow with the pixel count and, across model sizes, roughly with the parameter count (the tiny test
UNets). A 15% margin covers the allocator's fragmentation and cuDNN/cuBLAS workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError

KOLORS_UNET_PARAMS = 2_579_458_820
GIB = 2**30
# per image at 1024 px, full-size Kolors UNet: (checkpointing, compiled) -> GiB
ACTIVATION_GIB = {(False, False): 7.45, (False, True): 5.05, (True, False): 0.86, (True, True): 0.86}
MARGIN = 1.15


@dataclass(frozen=True)
class MemoryPlan:
    gradient_checkpointing: bool
    need_gib: float
    free_gib: float

    def describe(self) -> str:
        return (
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'} "
            f"(step needs ~{self.need_gib:.1f} GiB, {self.free_gib:.1f} GiB free)"
        )


def activation_gib(train: TrainConfig, unet_params: int, checkpointing: bool, compiled: bool = False) -> float:
    """Estimated activation memory of one step (batch_size images) on this device."""
    pixels = (train.resolution / 1024) ** 2
    return ACTIVATION_GIB[checkpointing, compiled] * pixels * train.batch_size * unet_params / KOLORS_UNET_PARAMS * MARGIN


def plan_memory(train: TrainConfig, unet_params: int, free_bytes: int, compiled: bool = False) -> MemoryPlan:
    """Resolve `train.gradient_checkpointing` against the free GPU memory; raise if nothing fits.

    `free_bytes` is what the GPU has free with the UNet, LoRA and cache already on it, so only the step's
    activations (and the gradients/moments of the LoRA, which are small) remain to be placed.
    """
    free = free_bytes / GIB
    requested = train.gradient_checkpointing
    options = [requested] if isinstance(requested, bool) else [False, True]
    for checkpointing in options:
        need = activation_gib(train, unet_params, checkpointing, compiled)
        if need <= free:
            return MemoryPlan(checkpointing, need, free)
    need = activation_gib(train, unet_params, options[-1], compiled)
    lower = [f"train.batch_size (now {train.batch_size})", f"train.resolution (now {train.resolution})"]
    if requested is False:
        lower.insert(0, "set train.gradient_checkpointing auto or true")
    raise KoloraError(
        f"the training step needs ~{need:.1f} GiB of GPU memory but {free:.1f} GiB are free "
        f"(train.batch_size {train.batch_size}, train.resolution {train.resolution}, gradient checkpointing "
        f"{'on' if options[-1] else 'off'}): lower " + ", ".join(lower)
    )
