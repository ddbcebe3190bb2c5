"""FP8 (e4m3) products for the Kolors UNet's feed-forward layers at generation: the `generate.fp8` opt-in.

Why these layers: Hopper and Ada run e4m3 matrix products at twice the fp16 rate, and each transformer layer's
feed-forward pair (`act_fn.proj`, 4x-8x wide, and `ff`) holds two thirds of the UNet's linear FLOPs. Quantizing an
activation costs a pass over it; for the narrow attention projections that pass costs what the faster product saves
(all 722 attention-block layers in FP8 through torchao gained 1.2%; this module's `projections=True`, 582 layers, 2%
for 90 s more cold compile: docs/benchmarks.md), for the wide feed-forward products it does not, and inductor fuses
the quantization into the LayerNorm / GEGLU that produces the input. Eager, the quantization runs as separate
kernels and FP8 is slower than fp16, so `generate.fp8` makes `generate.compile: auto` compile every shard on a GPU
(CPUs, where the tests run these layers, stay eager).

Why hand-written rather than torchao's `Float8DynamicActivationFloat8WeightConfig` (the same recipe, measured in
`bench/fp8_torchao.py`): inductor took 101 s to compile one transformer layer holding torchao's FP8 weight tensors
(a tensor subclass) against 5.4 s in fp16, and the full UNet's warm-up did not finish in 430 s; the layers here
hold plain e4m3 buffers and compile like fp16 ones. torchao is also not in the images (its releases pin narrow
torch ranges), and the forward is a few public torch ops (`torch._scaled_mm`, cuBLASLt).

One scale per tensor, torchao's "tensorwise" recipe: measured on an H200, a compiled 1280-wide layer ran 7.4% faster
than fp16 this way and 1% with one scale per row (cuBLASLt's row-scaled product is slower and comes out in bf16
only), at the same error (2.7% relative on the layer's output). e4m3's exponent spans ~18 binades, so a per-tensor
scale keeps values far below the largest one.

Compiled, the activation's scale is the previous call's ("delayed scaling", Transformer Engine's recipe), with
INPUT_HEADROOM for growth: with the scale of the call itself, the cast must wait for a pass that finds the
tensor's largest magnitude, and inductor recomputed the GEGLU for that pass: 4% of the story's GPU time on an H200
(docs/benchmarks.md). With the previous call's scale, the cast no longer waits, and the largest magnitude for the
next call is found in the cast's own pass (a row reduction, in `forward`); measured on an H200, the story ran 3.3%
faster. A denoising step's activations change little from the step before; what outgrows the headroom saturates at
e4m3's largest value. Eager (the CPUs of the tests, and the first call after `to_fp8`, which
`calibration` runs eagerly to give every layer its first scale) the scale is the call's own.
This changes the math (e4m3 keeps 3 mantissa bits), and `bench/generate_bench.py` measures the difference from
fp16 on the same seeds. Each layer keeps its fp16 weight as the master (LoRA merges write it); `refresh`
re-quantizes the e4m3 copy in place, so compiled code that holds the buffers sees the new values.
"""

from __future__ import annotations

import contextlib

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
FEED_FORWARD = (".act_fn.proj", ".ff")  # diffsynth's BasicTransformerBlock: GEGLU projection and output layer
# the rest of an attention block's per-step products; not attn2's to_k / to_v, whose input is the text, projected
# once per batch (kolora_core/models/text_attention.py)
PROJECTIONS = (".proj_in", ".proj_out", *(f".attn1.to_{p}" for p in ("q", "k", "v", "out")), ".attn2.to_q", ".attn2.to_out")
FP8_CAPABILITY = (8, 9)  # e4m3 tensor cores: Ada (sm89) and Hopper (sm90) on
INPUT_HEADROOM = 2.0  # a compiled call's input may reach twice the previous call's largest magnitude unsaturated


def _scale(x: torch.Tensor) -> torch.Tensor:
    """The fp32 scale mapping the tensor's largest magnitude to e4m3's largest finite value.

    The largest magnitude of each row, then of those: one amax's value, but as a row reduction over the cast's own
    iteration space, which inductor computes in the cast's pass (a whole-tensor amax it split off into one of its
    own; docs/benchmarks.md, 2026-12-02 night)."""
    return (x.abs().amax(dim=-1).amax().float() / FP8_MAX).clamp(min=1e-12)


def _quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


class Fp8Linear(torch.nn.Linear):
    """An `nn.Linear` (same parameters, same module path: merges and LoRA files see the layer they know) whose
    product runs in e4m3, the bias added by the product itself, out in the input's dtype."""

    weight_fp8: torch.Tensor
    weight_scale: torch.Tensor
    input_scale: torch.Tensor  # for the next compiled call: this call's, with INPUT_HEADROOM (0 before the first)
    calibrated = False  # whether a call has set input_scale (a flag, not the tensor: reading that syncs). Compiled
    # before any call, a layer uses its own scale and sets the flag, and the changed flag has the graph traced again
    # (one more compile; `calibration` avoids it): never the zero scale, which would zero the product

    @torch.no_grad()
    def refresh(self) -> None:
        """The e4m3 copy from the master weight; in place once it exists (compiled graphs read these buffers)."""
        scale = _scale(self.weight)
        quantized = _quantize(self.weight, scale)
        if "weight_fp8" in self._buffers:
            self.weight_fp8.copy_(quantized)
            self.weight_scale.copy_(scale)
        else:
            self.register_buffer("weight_fp8", quantized, persistent=False)
            self.register_buffer("weight_scale", scale, persistent=False)
            self.register_buffer("input_scale", torch.zeros_like(scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        found = _scale(flat)
        if self.calibrated and torch.compiler.is_compiling():
            scale = self.input_scale  # the previous call's (module doc)
        else:  # eager; or compiled before any eager call: the call's own scale, then traced again with the buffer's
            scale, self.calibrated = found, True
        out = torch._scaled_mm(
            _quantize(flat, scale),
            self.weight_fp8.t(),
            scale_a=scale,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=x.dtype,
        )
        with torch.no_grad():  # after the product: compiled, `scale` is this very buffer
            self.input_scale.copy_(found * INPUT_HEADROOM)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _convertible(name: str, module: torch.nn.Module, projections: bool) -> bool:
    """A plain Linear of an attention block (feed-forward, or with `projections` also PROJECTIONS), in dimensions
    `_scaled_mm` takes (multiples of 16)."""
    return (
        type(module) is torch.nn.Linear
        and (("transformer_blocks" in name and name.endswith(FEED_FORWARD)) or (projections and name.endswith(PROJECTIONS)))
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def to_fp8(unet: torch.nn.Module, *, projections: bool = False) -> int:
    """Turn the UNet's feed-forward layers (and with `projections` its attention blocks' other per-step products)
    into `Fp8Linear` in place, their e4m3 copies made; returns how many were converted.

    Call before the first compiled call (the buffers must exist when the graph is traced) and `refresh` after
    every change of the weights (a LoRA merge)."""
    converted = [module for name, module in unet.named_modules() if _convertible(name, module, projections)]
    for module in converted:
        module.__class__ = Fp8Linear
    refresh(unet)
    return len(converted)


def refresh(unet: torch.nn.Module) -> int:
    """Re-quantize every `Fp8Linear` of `unet` from its master weight; returns how many (0: none converted)."""
    layers = _layers(unet)
    for module in layers:
        module.refresh()
    return len(layers)


def _layers(unet: torch.nn.Module) -> list[Fp8Linear]:
    return [module for module in unet.modules() if isinstance(module, Fp8Linear)]


def calibration(unet: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Around a UNet call: eager (compiled code set aside) while an FP8 layer of it has no input scale yet, so its
    compiled calls start from this call's scales (module doc); nothing once they have one."""
    if any(not layer.calibrated for layer in _layers(unet)):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def fp8_unsupported(device: str) -> str | None:
    """Why `device` cannot run the e4m3 products fast, or None. A CPU runs them (slowly; the tests do)."""
    if not device.startswith("cuda"):
        return None
    capability = torch.cuda.get_device_capability(device)
    if capability >= FP8_CAPABILITY:
        return None
    name = torch.cuda.get_device_name(device)
    return f"{name} (sm{capability[0]}{capability[1]}) has no FP8 tensor cores (sm89+: L4, L40S, H100, H200)"
