"""Experiment (bench only): FP8 matrix products for the UNet's linear layers at inference.

Measured on an H200 (docs/benchmarks.md) it does not pay: the e4m3 GEMM alone runs at 1074 TFLOP/s against
fp16's 716, but quantizing the activations around it costs about what it saves, compiled (1.646 vs 1.666
s/image), so it is not a `generate` setting. Kept so the measurement can be repeated (`generate_bench.py`
flags `fp8` and `micro`).

Why it was tried: about 63% of a Kolors UNet forward's FLOPs are its transformer layers' linear layers, and Hopper's tensor
cores run e4m3 FP8 at twice the bf16 rate. Each linear layer keeps its fp16 weight as the master copy (LoRA
merges and strength switches write it) and an e4m3 copy with one scale per output row, refreshed by
`requantize` after every merge; activations are quantized per row (token) on the fly, which torch.compile fuses
into the kernel that produces them. The product is `torch._scaled_mm` (cuBLASLt/CUTLASS on sm89+), bf16 out.

Hand-written rather than torchao's `Float8DynamicActivationFloat8WeightConfig` (the same recipe): torchao is not
on the GPU image, its releases pin narrow torch ranges, and the forward is these few lines of public torch ops.
"""

from __future__ import annotations

import torch
from diffsynth.models.sd_unet import AttentionBlock

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    return (x.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)


class Float8Linear(torch.nn.Linear):
    """An `nn.Linear` (same parameters, same module path) whose product runs in FP8 with per-row scales."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor

    @torch.no_grad()
    def requantize(self) -> None:
        """Refresh the FP8 copy from the master weight, in place once the buffers exist (compiled code keeps them)."""
        scale = _row_scale(self.weight)
        quantized = (self.weight.float() / scale).to(FP8)
        if "weight_fp8" in self._buffers:
            self.weight_fp8.copy_(quantized)
            self.weight_scale.copy_(scale.t())
        else:
            self.register_buffer("weight_fp8", quantized, persistent=False)
            self.register_buffer("weight_scale", scale.t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        scale = _row_scale(flat)
        quantized = (flat.float() / scale).to(FP8)
        out = torch._scaled_mm(
            quantized, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16
        ).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def to_float8(unet: torch.nn.Module) -> int:
    """Turn the linear layers of every attention block (transformer layers, proj_in/out) into `Float8Linear`.

    Layers of other shapes (time embeddings: one row per image) gain nothing; dimensions must be multiples of 16.
    Returns how many layers were converted; call `requantize_all` before the first forward and after merges.
    """
    converted = 0
    for block in unet.modules():
        if not isinstance(block, AttentionBlock):
            continue
        for module in block.modules():
            if type(module) is torch.nn.Linear and module.in_features % 16 == 0 and module.out_features % 16 == 0:
                module.__class__ = Float8Linear
                converted += 1
    return converted


def requantize_all(unet: torch.nn.Module) -> None:
    for module in unet.modules():
        if isinstance(module, Float8Linear):
            module.requantize()
