"""kolora's fast generation engine on a GPU: seconds per image and peak memory, one JSON line per measurement.

Random weights of the REAL Kolors architectures, built exactly as ../shared/bench/seed_baseline.py builds
them (ChatGLM3-6B and SDXLUNet(is_kolors=True) on the meta device, then to_empty + small normal init, fp16;
VAE decoder in fp32), so FLOPs and memory are those of Kolors; no weights are downloaded. The engine is
`kolora_core.models.sampler.KolorsSampler`, the code the generate stage runs: all prompts encoded
first, text encoder released, cond+uncond (and `batch` prompts) in one UNet call per step, bf16 VAE decode
(the stage's `generate.vae_dtype: auto` on a GPU; BENCH_VAE=float32 to compare).
Settings are the seed's: 50 steps, cfg 4, 1024x1024, the seed notebook's prompts and negative prompts.

    python bench/generate_bench.py                 # GPU: b8 compiled, and with FP8 linear layers
    python bench/generate_bench.py --tiny          # CPU smoke test on the tiny models (64 px, 4 steps)

Env knobs: BENCH_GEN_IMAGES (images per variant, default 8: the story), BENCH_RES (default 1024),
BENCH_STEPS (default 50), BENCH_VAE (decode dtype, default bfloat16), BENCH_VARIANTS (comma list of
b<batch>[+flag...]; flags: compile (each UNet layer compiled, kernels cached; the stage compiles with vae),
whole (the whole UNet as one compiled graph instead), vae (the VAE decoder compiled too),
cg (compile mode reduce-overhead: CUDA graphs), gfp8 (`generate.fp8`: the feed-forward products in e4m3,
kolora_core/models/fp8.py), gfp8p (those and the attention blocks' other per-step products:
`to_fp8(projections=True)`), fp8ff / fp8 (the attention blocks' feed-forward / all linear layers in FP8 through
torchao, fp8_torchao.py: an experiment, not a kolora setting), cl (channels_last),
bm (cudnn.benchmark), cudnn / flash (that SDPA backend first; default kolora's choice, kolora_core/models/attention.py),
tune (inductor coordinate-descent tuning, 1x1 convolutions as GEMMs), freeze (inductor freezing: the merged
weights as constants, folded and laid out for the kernels), mat (compile mode max-autotune-no-cudagraphs),
prof (after the timing, one batch of 10 steps under torch.profiler: GPU time by kernel kind, kernel_profile.py);
"micro" (one eager UNet call per SDPA backend, and one feed-forward GEMM in fp16 and FP8); default
"b8,b8+compile" (the stage's choice for the 8-image story, and with compilation); add "seed" to time diffsynth's
SDXLImagePipeline on the same models in the same process), BENCH_COMPILE_CACHE (compile cache directory; default
a fresh temporary one: a cold start).

Every variant renders the same requests (prompts and seeds), so each line after the first also gives its images'
difference from the first variant's (`image_diff_vs`: mean absolute difference in 0-255 pixel values and PSNR),
the check asked of FP8 against bf16/fp16 on the same seeds. With random weights 50 steps amplify any rounding
(variants of identical math differ by ~24/255), so each line also gives one UNet call's output on fixed inputs
against the first variant's (`unet_rel_diff`: relative L2 distance of the noise predictions), which does not.

Output lines (`what`):
* env, built_random_models: GPU, construction seconds and parameter counts;
* kolora_encode: seconds to encode all prompts + negative prompts (once, shared by the variants);
* kolora_vae_decode: one decode at fp32, bf16, and bf16 channels_last (the configured dtype is in every variant);
* kolora_generate_image: per variant `seconds_per_image` = sampling + decode per image + its share of the
  encoding; `sampling_seconds_per_image`, `warmup_seconds` (first batch at 2 steps: cuDNN/compile), and
  `peak_gib` = the stage's peak (max of the encoding phase, when the text encoder is still resident,
  and this variant's sampling), `sampling_peak_gib`;
* seed_generate_image (variant "seed"): SDXLImagePipeline on the same models, seconds per image.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fp8_torchao import Fp8Layers, quantize_for_inference, scope_of
from kernel_profile import kernel_breakdown
from real_kolors import real_kolors

from kolora_core.inference.story import Job

warnings.filterwarnings("ignore")

TINY = "--tiny" in sys.argv
GEN = int(os.environ.get("BENCH_GEN_IMAGES", "8"))
RES = int(os.environ.get("BENCH_RES", "64" if TINY else "1024"))
STEPS = int(os.environ.get("BENCH_STEPS", "4" if TINY else "50"))
VARIANTS = os.environ.get("BENCH_VARIANTS", "b1,b2" if TINY else "b8,b8+compile").split(",")
VAE = os.environ.get("BENCH_VAE", "float32" if TINY else "bfloat16")
CFG = 4.0


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def random_models(device: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """seed_baseline.py's random models without the VAE encoder generation does not use; fp32 VAE decoder as the seed."""
    models = real_kolors(device, ("kolors_text_encoder", "sdxl_unet", "sdxl_vae_decoder"))
    return models["kolors_text_encoder"], models["sdxl_unet"].eval(), models["sdxl_vae_decoder"].float()


def tiny_models() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    from kolora_core.models.tiny import build_tiny_models

    models = build_tiny_models(0)
    return models["kolors_text_encoder"], models["sdxl_unet"].eval(), models["sdxl_vae_decoder"]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else 0.0


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


FLAGS = {
    "compile",
    "whole",
    "vae",
    "cg",
    "gfp8",
    "gfp8p",
    "fp8ff",
    "fp8",
    "cl",
    "bm",
    "cudnn",
    "flash",
    "tune",
    "mat",
    "freeze",
    "prof",
}


E4M3_SCOPES = (None, "gfp8", "gfp8p")  # each converts more layers than the one before; converted layers stay e4m3


def parse_variant(name: str) -> tuple[int, set[str]]:
    """b<batch> plus flags (module docstring); cudnn / flash put that SDPA backend first (default: kolora's choice)."""
    head, *flags = name.strip().split("+")
    if not head.startswith("b") or not head[1:].isdigit() or set(flags) - FLAGS:
        raise SystemExit(f"BENCH_VARIANTS entry {name!r}: expected b<batch>[+{'][+'.join(sorted(FLAGS))}] or seed")
    return int(head[1:]), set(flags)


def unet_output(sampler: object, requests: list[Job]) -> torch.Tensor:
    """One UNet call at the shapes `sampler.sample` uses for `requests` (same batch, dtypes and attention backend,
    so compiled code runs without recompiling), on fixed noise at the first timestep: the noise prediction, fp32."""
    from kolora_core.models.attention import sdpa_context
    from kolora_core.models.sampler import ddim_plan
    from kolora_core.models.text_attention import text_keys_values

    device, first = sampler.device, requests[0]
    texts = [r.prompt for r in requests] + [r.negative_prompt for r in requests]  # cond, then uncond, as sample()
    text = torch.cat([sampler.embeddings[t][0] for t in texts])
    pooled = torch.cat([sampler.embeddings[t][1] for t in texts])
    g = torch.Generator(device).manual_seed(0)
    sample = torch.randn(text.shape[0], 4, first.height // 8, first.width // 8, device=device, dtype=sampler.dtype, generator=g)
    time_id = torch.tensor([first.height, first.width, 0, 0, first.height, first.width], device=device).repeat(text.shape[0])
    with torch.no_grad(), sdpa_context(device), text_keys_values(sampler.unet, text):
        out = sampler.unet(
            sample=sample,
            timestep=ddim_plan(sampler.scheduler, first.steps)[0][:1].to(device),
            encoder_hidden_states=text,
            add_time_id=time_id,
            add_text_embeds=pooled,
        )
    return out.float()


def micro(sampler: object, device: str) -> None:
    """One UNet call at the story's batch (8 prompts x cond/uncond), eager, per SDPA backend; and one GEMM of a
    transformer layer's feed-forward shape in fp16 and in FP8 (torchao, activation quantized in the call), to
    weigh a faster product against the quantization around it."""
    from fp8_torchao import inference_config
    from torchao.quantization import quantize_

    unet = sampler.unet
    batch, lat = 16, RES // 8
    g = torch.Generator(device).manual_seed(0)
    emb, pooled = next(iter(sampler.embeddings.values()))
    args = {
        "sample": torch.randn(batch, 4, lat, lat, device=device, dtype=emb.dtype, generator=g),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": emb.repeat(batch, 1, 1),
        "add_text_embeds": pooled.repeat(batch, 1),
        "add_time_id": torch.tensor([RES, RES, 0, 0, RES, RES], device=device).repeat(batch),
    }

    def timed(fn: object, n: int = 5) -> float:
        fn()
        fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return round((time.perf_counter() - t) / n, 6)  # a GEMM takes ~0.5 ms: 0.1 ms steps would decide its rate

    from kolora_core.models.attention import SDPA_ENV, sdpa_context

    results = {}
    with torch.no_grad():
        for backend in ("flash", "cudnn"):
            os.environ[SDPA_ENV] = backend
            with sdpa_context(device):
                results[f"unet_fp16_{backend}"] = timed(lambda: unet(**args))
        m, k, n = 16 * 1024, 1280, 10240  # the GEGLU projection of a 1280-wide block at 32x32 latents
        a = torch.randn(m, k, device=device, dtype=emb.dtype)
        layer = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, device=device, dtype=emb.dtype))
        results["gemm_fp16"] = timed(lambda: layer(a), 20)
        quantize_(layer, inference_config())
        results["gemm_fp8_with_quantize"] = timed(lambda: layer(a), 20)
        compiled = torch.compile(layer)
        results["gemm_fp8_with_quantize_compiled"] = timed(lambda: compiled(a), 20)
    os.environ[SDPA_ENV] = "auto"
    gemm_tflops = 2 * m * k * n / 1e12
    emit(
        what="kolora_unet_micro",
        batch=batch,
        res=RES,
        seconds=results,
        gemm_shape=[m, k, n],
        gemm_tflops_per_s={key: round(gemm_tflops / v, 1) for key, v in results.items() if key.startswith("gemm")},
    )


def bench_seed_pipeline(
    te: torch.nn.Module, unet: torch.nn.Module, vdec: torch.nn.Module, device: str, requests: list[Job]
) -> None:
    from diffsynth import ModelManager, SDXLImagePipeline

    mm = ModelManager(torch_dtype=next(unet.parameters()).dtype, device=device)
    for name, m in (("kolors_text_encoder", te), ("sdxl_unet", unet), ("sdxl_vae_decoder", vdec)):
        mm.model.append(m)
        mm.model_name.append(name)
        mm.model_path.append("random:" + name)
    pipe = SDXLImagePipeline.from_model_manager(mm)

    def call(r: Job, steps: int) -> None:
        torch.manual_seed(r.seed)
        pipe(
            prompt=r.prompt,
            negative_prompt=r.negative_prompt,
            cfg_scale=r.cfg_scale,
            num_inference_steps=steps,
            height=r.height,
            width=r.width,
            progress_bar_cmd=lambda x: x,
        )

    call(requests[0], 2)
    sync(device)
    times = []
    for r in requests:
        t = time.perf_counter()
        call(r, r.steps)
        sync(device)
        times.append(round(time.perf_counter() - t, 3))
    emit(
        what="seed_generate_image",
        res=RES,
        steps=STEPS,
        cfg=CFG,
        seconds=times,
        seconds_per_image=round(sum(times) / len(times), 3),
    )


def main() -> None:
    from kolora_core.config.seed import SEED_STORY
    from kolora_core.models.sampler import KolorsSampler

    device = "cpu" if TINY else "cuda"
    emit(what="env", torch=torch.__version__, device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu", tiny=TINY)
    started = time.perf_counter()
    te, unet, vdec = tiny_models() if TINY else random_models(device)
    emit(
        what="built_random_models",
        seconds=round(time.perf_counter() - started, 1),
        te_params=sum(p.numel() for p in te.parameters()),
        unet_params=sum(p.numel() for p in unet.parameters()),
    )
    requests = [
        Job(i, SEED_STORY[i % len(SEED_STORY)][0], SEED_STORY[i % len(SEED_STORY)][1], i, CFG, STEPS, RES, RES, 1.0)
        for i in range(GEN)
    ]
    if "seed" in VARIANTS:
        bench_seed_pipeline(te, unet, vdec, device, requests)

    from kolora_core.models.unet_compile import use_compile_cache

    use_compile_cache(os.environ.get("BENCH_COMPILE_CACHE") or tempfile.mkdtemp(prefix="kolora-compile-"))
    sampler = KolorsSampler(te, unet, vdec, device=device, vae_dtype=getattr(torch, VAE))
    del te
    sampler.encode(["warm-up"])
    sync(device)
    reset_peak(device)
    t = time.perf_counter()
    sampler.encode([r.prompt for r in requests] + [r.negative_prompt for r in requests])
    sync(device)
    encode_seconds = time.perf_counter() - t
    encode_peak = peak_gib(device)
    sampler.release_text_encoder()
    emit(what="kolora_encode", texts=len(sampler.embeddings) - 1, seconds=round(encode_seconds, 3), peak_gib=encode_peak)

    if not TINY:  # the VAE decode alone, per image (the configured dtype is inside every variant's time)
        latent = sampler.sample(requests[:1])
        for dtype, layout, benchmark in (("float32", "nchw", False), ("bfloat16", "nchw", False), ("bfloat16", "nhwc", True)):
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            sampler.vae_decoder.to(dtype=getattr(torch, dtype), memory_format=fmt)
            torch.backends.cudnn.benchmark = benchmark
            sampler.decode(latent)
            sync(device)
            t = time.perf_counter()
            for _ in range(3):
                sampler.decode(latent)
            sync(device)
            seconds = round((time.perf_counter() - t) / 3, 4)
            emit(what="kolora_vae_decode", res=RES, dtype=dtype, layout=layout, cudnn_benchmark=benchmark, seconds=seconds)
        sampler.vae_decoder.to(dtype=getattr(torch, VAE), memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = False

    reference: tuple[str, torch.Tensor, torch.Tensor] | None = None
    fp8 = Fp8Layers(quantize_for_inference)
    from kolora_core.models.fp8 import to_fp8

    e4m3_layers, e4m3_scope = 0, None
    for name in (v for v in VARIANTS if v.strip() != "seed"):
        if name == "micro":
            micro(sampler, device)
            continue
        batch, flags = parse_variant(name)
        import torch._inductor.config as inductor

        inductor.conv_1x1_as_mm = inductor.coordinate_descent_tuning = "tune" in flags
        inductor.freezing = "freeze" in flags
        torch._dynamo.reset()  # a fresh compilation with this variant's settings (inductor's disk cache still counts)
        mode = "max-autotune-no-cudagraphs" if "mat" in flags else "reduce-overhead" if "cg" in flags else None
        scope = "whole" if "whole" in flags else "compile" in flags
        fp8.widen(sampler.unet, scope_of(flags))
        wanted = "gfp8p" if "gfp8p" in flags else "gfp8" if "gfp8" in flags else None
        if E4M3_SCOPES.index(wanted) < E4M3_SCOPES.index(e4m3_scope):
            raise SystemExit("BENCH_VARIANTS: put the gfp8 variants last, gfp8p after gfp8 (FP8 layers stay FP8)")
        if wanted and wanted != e4m3_scope:  # before configure_unet: compilation traces the e4m3 buffers
            e4m3_layers += to_fp8(sampler.unet, projections=wanted == "gfp8p")
            e4m3_scope = wanted
        sampler.configure_unet(scope=scope, channels_last="cl" in flags, mode=mode)
        sampler.configure_vae(compiled="vae" in flags)
        if device == "cuda":
            torch.backends.cudnn.benchmark = "bm" in flags
        warm = [replace(r, steps=2) for r in requests[:batch]]
        sdpa = [f for f in ("cudnn", "flash") if f in flags]
        os.environ["KOLORA_SDPA"] = sdpa[0] if sdpa else "auto"
        t = time.perf_counter()
        list(sampler.render(warm, batch))
        sync(device)
        warmup = time.perf_counter() - t
        if GEN % batch:  # the last, smaller batch is another shape: compile/cuDNN-tune it outside the timing too
            list(sampler.render(warm[: GEN % batch], batch))
            sync(device)
        reset_peak(device)
        t = time.perf_counter()
        rendered = list(sampler.render(requests, batch))
        sync(device)
        sampling = (time.perf_counter() - t) / len(rendered)
        sampling_peak = peak_gib(device)
        pixels = torch.stack([torch.from_numpy(np.asarray(r.image)).float() for r in rendered])
        predicted = unet_output(sampler, requests[:batch])
        reference = reference or (name, pixels, predicted)
        mad = float((pixels - reference[1]).abs().mean())
        mse = float(((pixels - reference[1]) ** 2).mean())
        same_shape = predicted.shape == reference[2].shape
        unet_rel = float((predicted - reference[2]).norm() / reference[2].norm()) if same_shape else None
        emit(
            what="kolora_generate_image",
            engine="fast",
            variant=name,
            batch=batch,
            compile="compile" in flags,
            vae_compiled="vae" in flags,
            channels_last="cl" in flags,
            vae_dtype=VAE,
            res=RES,
            steps=STEPS,
            cfg=CFG,
            images=len(rendered),
            seconds_per_image=round(sampling + encode_seconds / GEN, 3),
            sampling_seconds_per_image=round(sampling, 3),
            encode_seconds_per_image=round(encode_seconds / GEN, 3),
            warmup_seconds=round(warmup, 1),
            peak_gib=max(encode_peak, sampling_peak),
            sampling_peak_gib=sampling_peak,
            fp8_layers=fp8.layers,
            fp8_scope=fp8.scope or None,
            e4m3_layers=e4m3_layers,
            attention=os.environ["KOLORA_SDPA"],
            image_diff_vs=None if reference[0] == name else reference[0],
            image_mean_abs_diff=None if reference[0] == name else round(mad, 3),
            image_psnr_db=None if reference[0] == name or mse == 0 else round(10 * math.log10(255**2 / mse), 2),
            unet_rel_diff=None if reference[0] == name or unet_rel is None else round(unet_rel, 5),
        )
        if "prof" in flags:
            short = [replace(r, steps=10) for r in requests[:batch]]
            profiled = kernel_breakdown(lambda short=short, batch=batch: list(sampler.render(short, batch)), repeats=1)
            emit(what="kernel_profile", variant=name, images=len(short), steps=10, **profiled)


if __name__ == "__main__":
    main()
