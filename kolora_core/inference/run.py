"""The generate stage: render this shard's story prompts with the LoRA merged at the trained scale."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from diffsynth import SDXLImagePipeline

from kolora_core.config import RunConfig
from kolora_core.device import resolve_device, weights_dtype
from kolora_core.errors import KoloraError
from kolora_core.inference.story import Generation, image_name, save_generation, shard_prompts
from kolora_core.lora import LORA_FILE, load_lora, merge_lora, sha256_of
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager

log = logging.getLogger("kolora.generate")


def run_generate(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    generate, out = config.generate, outputs["images"]
    todo = shard_prompts(generate)
    lora_path = inputs["lora"] / LORA_FILE
    lora = load_lora(lora_path)
    model_dir = ModelDir(inputs["models"])
    device = resolve_device(config.device)
    pipe = SDXLImagePipeline.from_model_manager(load_model_manager(model_dir, device, weights_dtype(device)))
    merged = merge_lora(pipe.unet, lora, generate.lora_strength)
    log.info(
        "LoRA merged into %d layers at %.4f (strength %s x alpha/rank %s)",
        merged,
        generate.lora_strength * lora.scale,
        generate.lora_strength,
        lora.scale,
    )
    common = {
        "cfg_scale": generate.cfg_scale,
        "steps": generate.steps,
        "width": generate.width,
        "height": generate.height,
        "lora_strength": generate.lora_strength,
        "lora_scale": lora.scale,
        "lora_sha256": sha256_of(lora_path),
        "base_model_sha256": model_dir.fingerprint(),
    }
    for index, story in todo:
        started = time.perf_counter()
        torch.manual_seed(story.seed)  # the seed notebook's call; `seed=` makes the noise independent of earlier draws
        image = pipe(
            prompt=story.prompt,
            negative_prompt=story.negative_prompt,
            cfg_scale=generate.cfg_scale,
            num_inference_steps=generate.steps,
            height=generate.height,
            width=generate.width,
            seed=story.seed,
            progress_bar_cmd=lambda steps: steps,
        )
        if not np.asarray(image).any():
            raise KoloraError(
                f"image {index} decoded to all black (NaN in the VAE): use the fp16-fix VAE or run the decoder in fp32"
            )
        record = Generation(
            index=index,
            file=image_name(index),
            prompt=story.prompt,
            negative_prompt=story.negative_prompt,
            seed=story.seed,
            seconds=round(time.perf_counter() - started, 3),
            **common,
        )
        save_generation(image, out, record)
        log.info(
            "image %d/%d (story #%d, seed %d) in %.1f s",
            len(list(out.glob("*.png"))),
            len(todo),
            index,
            story.seed,
            record.seconds,
        )
