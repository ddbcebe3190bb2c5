"""kolora's fast training engine on random weights of the real Kolors architectures; one JSON line per measurement.

Builds the models exactly as ../shared/bench/seed_baseline.py does (ChatGLM3-6B config, SDXLUNet(is_kolors=True)
via the meta device + to_empty, SDXL VAE encoder; small normal weights, unit norms), then runs kolora's own code:
`build_cache` (each caption once through ChatGLM, each image once through the VAE; both encoders freed and the
CUDA cache emptied before timing) and `FastEngine.step` (the training loop's step: draws, noising, UNet
forward/backward, GradScaler, AdamW; compiled layers and CUDA graphs as configured), at BENCH_RES x BENCH_RES.

Variants (BENCH_VARIANTS, comma list), each `b<batch>[+flag...]` on TrainConfig's defaults (16-mixed, compile,
CUDA graphs and gradient checkpointing all `auto`: the `full` profile's training), flags:
  bf16 (bf16-mixed), gc (gradient checkpointing on), nogc (off), compile, nocompile, nographs, eager (= nocompile+nographs),
  cudnn / flash (that SDPA backend first; none = kolora's choice, kolora_core/models/attention.py),
  whole (train.compile whole: the whole UNet compiled as one graph instead of layer by layer),
  prof (after the timed steps, 3 more under torch.profiler: GPU time by kernel kind, kernel_profile.py),
  fp8ff / fp8 (the frozen feed-forward / all attention-block linear layers through torchao's FP8 training recipe,
  fp8_torchao.py, an experiment and not a kolora setting; layers stay FP8, so these variants go last, fp8ff first)
e.g. `b1` is the seed recipe with kolora's defaults, `b1+gc+eager` the previous defaults, `b8+bf16` throughput.
(The development runs behind docs/benchmarks.md predate the 2,000-image compile threshold: there `b1` meant b1+compile.)
Every variant starts from the same LoRA and trains the same steps (same images, noise, timesteps), so losses and
LoRAs are comparable across variants: each line has the timed steps' losses and, for variants of the same batch
and precision, the LoRA's largest difference from the first of them (`lora_max_diff_vs`).

Each line: images/s, s/step, warm-up (the first BENCH_TRAIN_WARMUP steps: compilation, 3 eager steps, capture),
an estimate of the seed's 500 steps (warm-up + 500 x s/step), peak GPU GiB (warm-up included) and MFU against
790 TFLOP/s (the H200's measured bf16 GEMM rate), counting a training image as 3x the UNet forward FLOPs measured
once with torch.utils.flop_counter.FlopCounterMode (~7.0 TFLOPs at 1024). A variant that runs out of memory (or
that kolora refuses before its first step) prints {"error": ...} and the next one runs.

    python bench/train_bench.py                      # GPU: real architectures, 1024 px
    BENCH_RES=64 python bench/train_bench.py --tiny  # CPU smoke test with kolora's tiny models

Env knobs: BENCH_TRAIN_STEPS (20), BENCH_TRAIN_WARMUP (5), BENCH_RES (1024), BENCH_IMAGES (8), BENCH_VARIANTS
(b1,b1+gc+eager,b8+bf16 on CUDA; b1,b2+bf16 on CPU), BENCH_COMPILE_CACHE (compile cache directory; default: a fresh
temporary one, i.e. a cold start).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fp8_torchao import Fp8Layers, convert_for_training, scope_of
from kernel_profile import kernel_breakdown
from real_kolors import real_kolors

PEAK_TFLOPS = 790.0  # measured bf16 GEMM ceiling of the H200 (and H100), FACTS.md
CAPTION = "二次元"


def emit(**kw: object) -> None:
    print(json.dumps(kw, ensure_ascii=False), flush=True)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def real_models(device: str) -> dict[str, torch.nn.Module]:
    """seed_baseline.py's random models without the VAE decoder (training never decodes)."""
    models = real_kolors(device, ("kolors_text_encoder", "sdxl_unet", "sdxl_vae_encoder"))
    models["sdxl_vae_encoder"].half()
    return models


def tiny_models(device: str) -> dict[str, torch.nn.Module]:
    from kolora_core.models.tiny import build_tiny_models

    models = build_tiny_models(seed=0)
    models.pop("sdxl_vae_decoder")
    return {k: m.to(device) for k, m in models.items()}


def write_trainset(root: Path, count: int, res: int) -> list[tuple[str, str]]:
    from PIL import Image

    (root / "train").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(count):
        pixels = (torch.rand(res, res, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "train" / f"{i}.png")
        rows.append((f"{i}.png", CAPTION))
    (root / "train" / "metadata.csv").write_text("file_name,text\n" + "".join(f"{n},{t}\n" for n, t in rows), encoding="utf-8")
    return rows


def forward_tflops(unet: torch.nn.Module, res: int, device: str, text_hidden: int, dtype: torch.dtype) -> float:
    """UNet forward FLOPs of one image at `res`, counted by FlopCounterMode (no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    lat = res // 8
    args = {
        "sample": torch.randn(1, 4, lat, lat, device=device, dtype=dtype),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": torch.randn(1, 256, text_hidden, device=device, dtype=dtype),
        "add_text_embeds": torch.randn(1, text_hidden, device=device, dtype=dtype),
        "add_time_id": torch.tensor([res, res, 0, 0, res, res], device=device),
    }
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(**args)
    return counter.get_total_flops() / 1e12


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="kolora's tiny random models (CPU smoke test)")
    args = parser.parse_args(argv)

    from diffsynth import ModelManager, SDXLImagePipeline
    from lightning.fabric import Fabric

    from kolora_core.config import RunConfig, TrainConfig
    from kolora_core.errors import KoloraError
    from kolora_core.models.attention import SDPA_ENV, preferred_backend
    from kolora_core.models.unet_compile import uncompile_unet
    from kolora_core.training.cache import build_cache
    from kolora_core.training.fast_module import cast_frozen, inject_lora
    from kolora_core.training.run import FastEngine, TrainJob

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    steps, warm = env_int("BENCH_TRAIN_STEPS", 20), env_int("BENCH_TRAIN_WARMUP", 5)
    res, images = env_int("BENCH_RES", 1024), env_int("BENCH_IMAGES", 8)
    default_variants = "b1,b1+gc+eager,b8+bf16" if cuda else "b1,b2+bf16"
    variants = os.environ.get("BENCH_VARIANTS", default_variants).split(",")
    emit(what="env", torch=torch.__version__, device=torch.cuda.get_device_name(0) if cuda else "cpu", tiny=args.tiny, res=res)

    started = time.perf_counter()
    models = tiny_models(device) if args.tiny else real_models(device)
    text_hidden = models["kolors_text_encoder"].config.hidden_size
    emit(
        what="built_random_models",
        seconds=round(time.perf_counter() - started, 1),
        te_params=sum(p.numel() for p in models["kolors_text_encoder"].parameters()),
        unet_params=sum(p.numel() for p in models["sdxl_unet"].parameters()),
    )
    manager = ModelManager(torch_dtype=torch.float16 if cuda else torch.float32, device=device)
    for name, module in models.items():
        manager.model.append(module)
        manager.model_name.append(name)
        manager.model_path.append("random:" + name)
    pipe = SDXLImagePipeline.from_model_manager(manager)
    del manager, models

    tmp = Path(tempfile.mkdtemp(prefix="kolora-bench-"))
    rows = write_trainset(tmp / "trainset", images, res)
    compile_cache = os.environ.get("BENCH_COMPILE_CACHE") or str(Path(tempfile.mkdtemp(prefix="kolora-compile-")))
    base = {
        "resolution": res,
        "num_workers": 2,
        "checkpoint_every": 0,
        "log_every": 10**6,
        "compile_cache_dir": compile_cache,
    }
    cache_train = TrainConfig(**base, precision="16-mixed" if cuda else "32-true")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    fabric = Fabric(accelerator=device, devices=1, precision="16-mixed" if cuda else "32-true")
    cache = build_cache(pipe, tmp / "trainset", rows, cache_train, torch.device(device), fabric.autocast)
    if cuda:
        torch.cuda.synchronize()
    emit(
        what="kolora_cache",
        seconds=round(time.perf_counter() - started, 2),
        **cache.stats,
        peak_gib_during_encoding=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        gib_after_freeing_encoders=round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None,
    )
    unet = pipe.unet
    del pipe
    gc.collect()
    inject_lora(unet, TrainConfig(**base))
    fwd = forward_tflops(unet, res, device, text_hidden, torch.float16 if cuda else torch.float32)
    emit(what="unet_forward_tflops", res=res, tflops_per_image=round(fwd, 6), counted_by="FlopCounterMode")

    lora = {n: p for n, p in unet.named_parameters() if ".lora_" in n}
    fp8 = Fp8Layers(convert_for_training)
    initial = {n: p.detach().clone() for n, p in lora.items()}
    reference: dict[tuple[int, str], tuple[str, dict[str, torch.Tensor]]] = {}
    for variant in variants:
        try:
            train = TrainConfig(**base, **variant_settings(variant, cuda))
        except ValueError as exc:
            raise SystemExit(f"BENCH_VARIANTS entry {variant!r}: {exc}") from None
        dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(train.precision, torch.float32)
        sdpa = [f for f in ("cudnn", "flash") if f in variant.split("+")]
        os.environ[SDPA_ENV] = sdpa[0] if sdpa else "auto"
        uncompile_unet(unet)
        cast_frozen(unet, dtype)
        fp8.widen(unet, scope_of(variant.split("+")))
        with torch.no_grad():
            for name, param in lora.items():
                param.copy_(initial[name])
        variant_cache = cache.to(cache.embeddings.device, dtype)
        job = TrainJob(RunConfig(train=train), tmp / "trainset", rows, tmp, tmp / "out", tmp / "ckpt", "bench", "bench")
        engine = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            fabric = Fabric(accelerator=device, devices=1, precision=train.precision)
            t0 = time.perf_counter()
            engine = FastEngine(fabric, job, unet=unet, cache=variant_cache)
            for step in range(warm):
                engine.step(step)[0].item()
            warm_seconds = time.perf_counter() - t0
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            losses = [engine.step(step)[0] for step in range(warm, warm + steps)]
            loss_values = torch.stack(losses).cpu().tolist()  # waits for the last step
            seconds = (time.perf_counter() - t0) / steps
            ips = train.batch_size / seconds
            key = (train.batch_size, train.precision)
            final = {n: p.detach().float().clone() for n, p in lora.items()}
            ref_name, ref = reference.setdefault(key, (variant, final))
            emit(
                what="kolora_train",
                variant=variant,
                res=res,
                batch=train.batch_size,
                precision=train.precision,
                gradient_checkpointing=engine.memory.gradient_checkpointing,
                compile=engine.compiled,
                cuda_graphs=engine.cuda_graphs,
                attention=preferred_backend(device),
                seconds_per_step=round(seconds, 4),
                images_per_s=round(ips, 3),
                steps=steps,
                warmup_steps=warm,
                warmup_seconds=round(warm_seconds, 1),
                seconds_500_steps_estimate=round(warm_seconds + (500 - warm) * seconds, 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                mfu=round(ips * 3 * fwd / PEAK_TFLOPS, 4) if cuda else None,
                fp8_scope=fp8.scope or None,
                fp8_layers=fp8.layers,
                losses=[round(v, 5) for v in loss_values],
                lora_max_diff_vs=None if ref_name == variant else ref_name,
                lora_max_diff=None if ref_name == variant else max(float((final[n] - ref[n]).abs().max()) for n in final),
            )
            if "prof" in variant.split("+"):
                later = iter(range(warm + steps, warm + steps + 10))
                profiled = kernel_breakdown(lambda step=engine.step, later=later: step(next(later)))
                emit(what="kernel_profile", variant=variant, **profiled)
        except torch.cuda.OutOfMemoryError:
            emit(what="kolora_train", variant=variant, res=res, batch=train.batch_size, error="out of memory")
        except KoloraError as exc:
            emit(what="kolora_train", variant=variant, res=res, batch=train.batch_size, error=str(exc))
        finally:
            del engine
            for p in unet.parameters():
                p.grad = None
            torch._dynamo.reset()


FLAGS = {
    "bf16": {"precision": "bf16-mixed"},
    "gc": {"gradient_checkpointing": True},
    "nogc": {"gradient_checkpointing": False},
    "compile": {"compile": True},
    "nocompile": {"compile": False},
    "nographs": {"cuda_graphs": False},
    "eager": {"compile": False, "cuda_graphs": False},
    "whole": {"compile": "whole"},
    "prof": {},
    "fp8ff": {},  # Fp8Layers
    "fp8": {},
    "cudnn": {},  # attention backend first (env KOLORA_SDPA, kolora_core/models/attention.py); none = kolora's choice
    "flash": {},
}


def variant_settings(name: str, cuda: bool) -> dict[str, object]:
    """`b<batch>[+flag...]` -> TrainConfig fields (see the module docstring)."""
    head, *flags = name.strip().split("+")
    if not head.startswith("b") or not head[1:].isdigit() or set(flags) - set(FLAGS):
        raise ValueError(f"expected b<batch>[+{'][+'.join(sorted(FLAGS))}]")
    settings: dict[str, object] = {"batch_size": int(head[1:]), "precision": "16-mixed" if cuda else "32-true"}
    for flag in flags:
        settings.update(FLAGS[flag])
    if not cuda and settings["precision"] == "bf16-mixed":
        settings["precision"] = "32-true"  # no fp16/bf16 autocast speed on the CPU smoke test
    return settings


if __name__ == "__main__":
    main()
