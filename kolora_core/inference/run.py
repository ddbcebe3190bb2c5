"""The generate stage: render this shard's story prompts with the LoRA merged at the trained scale.

Two engines (`generate.engine`):
* `fast` (default): `kolora_core.models.sampler.KolorsSampler` takes the prompts' embeddings from train's
  `prompt-embeddings` output when they were made from the same text encoder in the same dtype (then ChatGLM3,
  12.5 GB, is never read), encodes the others and frees the text encoder, then renders `generate.batch_size`
  prompts per batch with conditional and unconditional passes in one UNet call; cuDNN attention on Hopper; its
  layers (and the VAE decoder) compiled when the shard is long enough to pay for it (`generate.compile`; kernels cached in
  `generate.compile_cache_dir`, so the compilation itself is paid once per model, torch and GPU); bf16 (GPU) /
  fp32 (CPU) VAE decode; with `generate.fp8` the feed-forward products in e4m3 (`kolora_core.models.fp8`).
* `seed`: diffsynth's `SDXLImagePipeline`, one call per image, exactly the seed notebook's path.
Both seed each image's noise with its own generator, so an image depends on its prompt, seed and settings,
not on its shard or batch-mates (beyond float rounding in batched kernels). Per-prompt LoRA strengths are
applied by restoring the UNet's original weights and merging again, never by merging on top.
Each finished image is kept in the resumable `progress` dir first (`progress.py`), so a retry renders only
what is missing; the committed `images` output is assembled from there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kolora_core.config import GenerateConfig, RunConfig, auto
from kolora_core.device import resolve_device
from kolora_core.errors import KoloraError
from kolora_core.inference.progress import Progress
from kolora_core.inference.prompt_length import warn_overlong
from kolora_core.inference.story import Generation, Job, image_name, shard_jobs
from kolora_core.lora.export import KOHYA_FILE, a1111_identity
from kolora_core.lora.format import LORA_FILE, LoRAFile, load_lora, sha256_of
from kolora_core.lora.merge import merge_lora
from kolora_core.models.fp8 import fp8_unsupported, refresh, to_fp8
from kolora_core.models.layout import UNET_FILE, ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.models.prompt_embeddings import Embedding, read_prompt_embeddings
from kolora_core.models.sampler import KolorsSampler, take_models
from kolora_core.models.unet_compile import CompileScope, use_compile_cache
from kolora_core.training.precision import generation_weights_dtype, vae_dtype

log = logging.getLogger("kolora.generate")
CRASH_ENV = "KOLORA_TEST_CRASH_AFTER_IMAGE"  # test hook: fail right after this story image is kept, as a kill would
# Compiling pays from this many images on: on an H200 it saves 0.28 s per image (batch 8) and costs 34 s cold,
# 7 s with the compile cache warm (docs/benchmarks.md), so it loses on the 8-image story and wins on long shards.
COMPILE_PAYS_IMAGES = 32


class LoRAStrength:
    """The LoRA merged into the UNet at one strength at a time; switching restores the base weights first."""

    def __init__(self, unet: torch.nn.Module, lora: LoRAFile, strengths: set[float]) -> None:
        self.unet, self.lora = unet, lora
        self.current: float | None = None
        named = dict(unet.named_modules())
        # Only needed when the shard uses several strengths: a CPU copy of the targeted layers' base weights.
        self.originals = (
            {m: named[m].weight.detach().to("cpu", copy=True) for m in lora.modules() if m in named} if len(strengths) > 1 else {}
        )

    @torch.no_grad()
    def apply(self, strength: float) -> None:
        if strength == self.current:
            return
        if self.current is not None:
            named = dict(self.unet.named_modules())
            for module, weight in self.originals.items():
                named[module].weight.copy_(weight)
        merged = merge_lora(self.unet, self.lora, strength)
        refresh(self.unet)  # FP8 copies of merged weights (generate.fp8), made again from the new masters
        log.info(
            "LoRA merged into %d layers at %.4f (strength %s x alpha/rank %s)",
            merged,
            strength * self.lora.scale,
            strength,
            self.lora.scale,
        )
        self.current = strength


def _by_strength(jobs: list[Job]) -> dict[float, list[Job]]:
    groups: dict[float, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.lora_strength, []).append(job)
    return groups


def base_model_name(manifest: dict[str, Any]) -> str:
    sources = manifest.get("sources", {})
    if manifest.get("kind") in ("tiny", "random"):
        size = "tiny" if manifest["kind"] == "tiny" else "full-size" if sources.get("full_size", True) else "reduced-size"
        return f"{size} random Kolors ({sources.get('architecture', '?')}, seed {sources.get('seed', '?')})"
    revision = f"@{sources['revision']}" if sources.get("revision") else ""
    return f"{sources.get('kolors_repo', 'Kwai-Kolors/Kolors')}{revision} + {sources.get('vae_repo', 'sdxl-vae-fp16-fix')}"


def needed_texts(jobs: list[Job]) -> list[str]:
    """What the fast sampler embeds for these jobs (negative prompts only where CFG is on), in its order."""
    return list(dict.fromkeys([j.prompt for j in jobs] + [j.negative_prompt for j in jobs if j.cfg_scale != 1.0]))


def cached_embeddings(
    directory: Path | None, model_dir: ModelDir, jobs: list[Job], generate: GenerateConfig, dtype: torch.dtype
) -> dict[str, Embedding]:
    """The embeddings of train's `prompt-embeddings` this shard can use (fast engine only), with one log line."""
    if generate.engine != "fast":
        return {}
    lookup = read_prompt_embeddings(directory, model_dir.text_encoder_fingerprint(), dtype, model_dir.text_encoder_width())
    texts = needed_texts(jobs)
    usable = {t: lookup.embeddings[t] for t in texts if t in lookup.embeddings}
    if len(usable) == len(texts):
        log.info("all %d texts from prompt-embeddings: the text encoder is not loaded", len(texts))
    else:
        why = lookup.refused or "the prompts changed since training"
        log.info("%d of %d texts from prompt-embeddings (%s): loading the text encoder", len(usable), len(texts), why)
    return usable


def compile_scope(generate: GenerateConfig, device: str, images: int) -> CompileScope:
    """What `generate.compile` means for a shard: auto compiles on a GPU from COMPILE_PAYS_IMAGES images on, and
    for every shard with `generate.fp8` (uncompiled, FP8 is slower than fp16); what the user set (`whole` too) is
    kept, also on a CPU, where the tests compile."""
    return auto(generate.compile, device.startswith("cuda") and (images >= COMPILE_PAYS_IMAGES or generate.fp8))


def _render_fast(
    manager: Any, jobs: list[Job], lora: LoRAFile, generate: GenerateConfig, device: str, cached: dict[str, Embedding]
) -> Iterator[Any]:
    texts = needed_texts(jobs)
    models = take_models(manager, text_encoder=any(t not in cached for t in texts))
    compiled = compile_scope(generate, device, len(jobs))
    if compiled:
        use_compile_cache(generate.compile_cache_dir)
    if generate.fp8:  # before compilation traces the layers: their e4m3 buffers must exist by then
        log.info("%d feed-forward layers in FP8 (generate.fp8)", to_fp8(models["sdxl_unet"]))
    sampler = KolorsSampler(
        models.pop("kolors_text_encoder", None),
        models["sdxl_unet"],
        models["sdxl_vae_decoder"],
        device=device,
        vae_dtype=vae_dtype(generate, device),
        compile_scope=compiled,
    )
    sampler.add_embeddings(cached)
    sampler.encode(texts)
    if sampler.prompter.text_encoder is not None:
        sampler.release_text_encoder()
        log.info("%d texts encoded; text encoder released", len(texts) - len(cached))
    strength = LoRAStrength(sampler.unet, lora, {j.lora_strength for j in jobs})
    for value, group in _by_strength(jobs).items():
        strength.apply(value)
        for rendered in sampler.render(group, generate.batch_size):
            yield rendered.request, rendered.image, rendered.seconds


def _render_seed(
    manager: Any, jobs: list[Job], lora: LoRAFile, generate: GenerateConfig, device: str, cached: dict[str, Embedding]
) -> Iterator[Any]:
    from diffsynth import SDXLImagePipeline

    pipe = SDXLImagePipeline.from_model_manager(manager)
    pipe.vae_decoder.to(vae_dtype(generate, device))  # the decoder casts its input to its own dtype
    strength = LoRAStrength(pipe.unet, lora, {j.lora_strength for j in jobs})
    for value, group in _by_strength(jobs).items():
        strength.apply(value)
        for job in group:
            started = time.perf_counter()
            torch.manual_seed(job.seed)  # the seed notebook's call; `seed=` makes the noise independent of earlier draws
            image = pipe(
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
                cfg_scale=job.cfg_scale,
                num_inference_steps=job.steps,
                height=job.height,
                width=job.width,
                seed=job.seed,
                progress_bar_cmd=lambda steps: steps,
            )
            yield job, image, time.perf_counter() - started


def run_generate(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    generate, out = config.generate, outputs["images"]
    jobs = shard_jobs(generate)
    if not jobs:
        _nothing_to_render(generate, outputs)
        return
    lora_path = inputs["lora"] / LORA_FILE
    lora = load_lora(lora_path)
    model_dir = ModelDir(inputs["models"])
    manifest = model_dir.read_manifest(config.models.verify)
    device = resolve_device(config.device)
    if generate.fp8 and (why := fp8_unsupported(device)):
        raise KoloraError(f"generate.fp8: {why}; set generate.fp8 false")
    kohya = inputs["lora"] / KOHYA_FILE
    a1111_name, a1111_hash = a1111_identity(kohya) if kohya.is_file() else ("", "")
    common = {
        "lora_scale": lora.scale,
        "lora_sha256": sha256_of(lora_path),
        "base_model_sha256": model_dir.fingerprint(),
        "base_model": base_model_name(manifest),
        "engine": generate.engine,
        "story_size": len(generate.prompts),
        "unet_sha256": manifest["files"][UNET_FILE]["sha256"],
        "lora_a1111_name": a1111_name,
        "lora_a1111_hash": a1111_hash,
        "fp8": generate.fp8,
    }
    progress = Progress(outputs["progress"], common)  # images an earlier attempt finished
    done = {job.index: record for job in jobs if (record := progress.finished(job)) is not None}
    todo = [job for job in jobs if job.index not in done]
    log.info(
        "shard %d/%d: %d of %d prompts (%d finished by an earlier attempt), %s engine on %s",
        generate.shard,
        generate.shards,
        len(jobs),
        len(generate.prompts),
        len(done),
        generate.engine,
        device,
    )
    warn_overlong(jobs)
    if todo:
        dtype = generation_weights_dtype(device)
        cached = cached_embeddings(inputs.get("prompt-embeddings"), model_dir, todo, generate, dtype)
        text_encoder = any(t not in cached for t in needed_texts(todo)) or generate.engine != "fast"
        manager = load_model_manager(model_dir, device, dtype, text_encoder=text_encoder)
        render = _render_fast if generate.engine == "fast" else _render_seed
        for count, (job, image, seconds) in enumerate(render(manager, todo, lora, generate, device, cached), start=1):
            _check_not_blank(image, job)
            record = Generation(**asdict(job), file=image_name(job.index), seconds=round(seconds, 3), **common)
            progress.save(image, record)
            done[job.index] = record
            log.info("image %d/%d (story #%d, seed %d) in %.2f s", count, len(todo), job.index, job.seed, record.seconds)
            if os.environ.get(CRASH_ENV) == str(job.index):
                raise RuntimeError(f"{CRASH_ENV}={job.index}: simulated crash after story image {job.index}")
    progress.assemble(list(done.values()), out)


def _nothing_to_render(generate: GenerateConfig, outputs: dict[str, Path]) -> None:
    """A shard beyond the story (more shards than prompts) commits an empty `images` output at once: an empty
    generations.jsonl, as evaluate reads shards. Why before the LoRA, the model manifest (`models.verify sha256` reads
    ~18 GB) and the device: none of them is used. `kolora run` and `kolora submit` refuse such a shard count; this is
    the way of a run whose parameters never passed them (the nightly, `argo submit` of the template)."""
    log.warning(
        "shard %d/%d: no prompts (the story has %d, prompt i goes to shard i %% %d): nothing to render, the LoRA and "
        "the models are not loaded; set generate-shards to %d or fewer",
        generate.shard,
        generate.shards,
        len(generate.prompts),
        generate.shards,
        len(generate.prompts),
    )
    Progress(outputs["progress"], {}).assemble([], outputs["images"])


def _check_not_blank(image: Image.Image, job: Job) -> None:
    if not np.asarray(image).any():
        raise KoloraError(
            f"image {job.index} decoded to all black (NaN in the VAE): "
            "set generate.vae_dtype float32/bfloat16 or use the fp16-fix VAE"
        )
