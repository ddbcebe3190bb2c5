"""Experiment (bench only): FP8 matrix products for the Kolors UNet's frozen linear layers, through torchao.

Why: issue 12 asks whether FP8 GEMMs for the frozen base weights pay, in training (throughput mode) and in
generation. Hopper runs e4m3 products at up to twice the bf16 rate, and 63% of a UNet forward's FLOPs are
its attention blocks' linear layers, two thirds of them the feed-forward pair (`act_fn.proj`, 4x-8x wide, and
`ff`). An earlier hand-written per-row recipe over all 722 attention-block layers gained 1.2% end to end
(docs/benchmarks.md, 2026-12-01 afternoon): quantizing the activations of the narrow 640/1280-wide layers costs
about what their faster product saves. So the scopes here are `ff` (only the wide feed-forward products, whose
inputs come out of a LayerNorm or GEGLU that inductor can fuse the row quantization into) and `all`.

torchao (the maintained library that carries these recipes) is not on the GPU image: carry its wheel. Its
inference recipe is `Float8DynamicActivationFloat8WeightConfig` with one scale per row; its training recipe
`convert_to_float8_training` also casts the weight gradient's operands, which a frozen base layer never needs:
under torch.compile, autograd asks no gradient of a frozen weight, so that product is dead code and dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

SCOPES = ("ff", "all")
FEED_FORWARD = (".act_fn.proj", ".ff")


def scope_of(flags: Collection[str]) -> str:
    """A variant's flags -> the scope it asks (`fp8`: all, `fp8ff`: ff, neither: '')."""
    return "all" if "fp8" in flags else "ff" if "fp8ff" in flags else ""


def _wanted(scope: str, name: str, module: torch.nn.Module) -> bool:
    """Plain linear layers inside the attention blocks, not yet converted (a quantized weight is a tensor
    subclass, a converted layer torchao's Float8Linear), never LoRA's own rank-r layers, in dims FP8 accepts."""
    if type(module) is not torch.nn.Linear or type(module.weight) is not torch.nn.Parameter:
        return False
    if ".lora_" in name or "transformer_blocks" not in name:
        return False
    if module.in_features % 16 or module.out_features % 16:
        return False
    base = name.removesuffix(".base_layer")
    return scope == "all" or base.endswith(FEED_FORWARD)


def _check(scope: str) -> None:
    if scope not in SCOPES:
        raise SystemExit(f"FP8 scope {scope!r}: expected one of {', '.join(SCOPES)}")


def inference_config() -> object:
    """Weights and activations e4m3 with one scale per tensor, the activations' found in each call.

    Per tensor, not torchao's per-row: its per-row path takes bf16 weights only, and the generate stage runs
    the UNet in fp16 (the seed's dtype).
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerTensor

    return Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor())


def quantize_for_inference(unet: torch.nn.Module, scope: str) -> int:
    """The chosen layers to `inference_config`; call after any LoRA merge (the product reads the quantized
    weight). Returns the layer count."""
    from torchao.quantization import quantize_

    _check(scope)
    chosen = {name for name, module in unet.named_modules() if _wanted(scope, name, module)}
    quantize_(unet, inference_config(), filter_fn=lambda _module, name: name in chosen)
    return len(chosen)


def convert_for_training(unet: torch.nn.Module, scope: str, recipe: str = "tensorwise") -> int:
    """The chosen frozen layers to torchao's Float8Linear (forward and input-gradient products in FP8).

    The LoRA's adapters stay bf16/fp32 beside them (peft's `base_layer` is what is converted). Returns the count.
    """
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    _check(scope)
    chosen = {name for name, module in unet.named_modules() if _wanted(scope, name, module)}
    convert_to_float8_training(
        unet, config=Float8LinearConfig.from_recipe_name(recipe), module_filter_fn=lambda _m, name: name in chosen
    )
    return len(chosen)


class Fp8Layers:
    """What a bench process has converted so far: scopes only widen (ff, then all), because torchao's
    conversions are not undone; a variant asking less after more is a mistake in BENCH_VARIANTS."""

    def __init__(self, convert: Callable[[torch.nn.Module, str], int]) -> None:
        self.convert, self.scope, self.layers = convert, "", 0

    def widen(self, unet: torch.nn.Module, scope: str) -> None:
        if self.scope and (not scope or SCOPES.index(scope) < SCOPES.index(self.scope)):
            raise SystemExit("BENCH_VARIANTS: put the fp8 variants last, fp8ff before fp8 (FP8 layers stay FP8)")
        if scope and scope != self.scope:
            self.layers += self.convert(unet, scope)
            self.scope = scope


def probe(device: str = "cuda") -> None:
    """Where FP8 generation's warm-up goes (`python bench/fp8_torchao.py`, one JSON line per figure): one
    1280-wide transformer layer of the real Kolors UNet at the story's batch (16 = 8 prompts x cond/uncond, 32x32
    latents), eager and compiled, in fp16 and with its feed-forward pair in FP8; the first compiled call is the
    compile. Then the same layer's twin, to see whether a second layer of the same shape reuses the compile.
    PROBE_PRECISIONS (default fp16,gfp8): gfp8 is kolora's `generate.fp8` (plain e4m3 buffers, one scale per
    tensor, kolora_core/models/fp8.py; docs/benchmarks.md also has a per-row variant's figures), fp8ff torchao's
    recipe (not after gfp8: those layers stay converted). Each line gives the compiled layer's output against fp16
    eager's (`rel_diff`, relative L2)."""
    import json
    import os
    import time

    from diffsynth.models.sd_unet import BasicTransformerBlock
    from real_kolors import real_kolors

    unet = real_kolors(device, ("sdxl_unet",))["sdxl_unet"].eval()
    layers = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock) and m.ff.in_features == 5120]
    x = torch.randn(16, 32 * 32, 1280, device=device, dtype=torch.float16)
    text = torch.randn(16, 256, 2048, device=device, dtype=torch.float16)

    def timed(fn: Callable[[], object], n: int = 10) -> tuple[float, float]:
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return round(first, 3), round((time.perf_counter() - t) / n * 1000, 3)

    def emit(**kw: object) -> None:
        print(json.dumps(kw), flush=True)

    with torch.no_grad():
        reference = layers[0](x, text).float()
        for precision in os.environ.get("PROBE_PRECISIONS", "fp16,gfp8").split(","):
            if precision == "gfp8":
                from kolora_core.models.fp8 import to_fp8

                to_fp8(unet)
            elif precision == "fp8ff":
                from torchao.quantization import quantize_

                for layer in layers[:2]:
                    quantize_(layer, inference_config(), filter_fn=lambda m, name: f".{name}".endswith(FEED_FORWARD))
            first, ms = timed(lambda: layers[0](x, text))
            emit(what="fp8_probe", precision=precision, mode="eager", first_call_s=first, ms_per_call=ms)
            torch._dynamo.reset()
            for index in (0, 1):
                compiled = torch.compile(layers[index])
                first, ms = timed(lambda compiled=compiled: compiled(x, text))
                rel = float((compiled(x, text).float() - reference).norm() / reference.norm()) if index == 0 else None
                emit(
                    what="fp8_probe",
                    precision=precision,
                    mode="compiled",
                    layer=index,
                    first_call_s=first,
                    ms_per_call=ms,
                    rel_diff=rel if rel is None else round(rel, 5),
                )


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    probe()
