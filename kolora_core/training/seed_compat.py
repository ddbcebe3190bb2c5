"""Proof that the fast engine computes the seed's objective: one step, both ways, same numbers.

`train.seed_compat: true` runs this before training and writes `seed_compat.json`; a mismatch
stops the stage. On the configured model, batch size, precision and device:

1. one base UNet, two copies: diffsynth's `LightningModelForT2ILoRA` (via `SeedLoRAModule`) injects
   its LoRA, kolora's `inject_lora` the other; both seeded with train.seed -> the LoRA tensors must
   be identical;
2. the batch of step 0 (the same images, crops and flips the training loop would draw);
3. the seed: `torch.manual_seed(s)` then diffsynth's own `training_step` on {"text", "image"}
   (ChatGLM and VAE inside, global RNG draws noise then timestep);
4. kolora: the same captions and images through the cache (`build_cache`), noise and timestep
   from `step_generators(s)`, `add_noise`, `FastLoRAModule.forward`;
5. compare the losses, then backpropagate both and compare the LoRA gradients.

The seed draws one timestep per batch, so the comparison uses that (the fast engine's
`per_sample` draw is the same thing at batch 1). Frozen weights use the seed's dtype (fp16 for mixed
precision, fp32 for 32-true): bf16 weights are a fast-engine option the seed never had.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from kolora_core.config import TrainConfig
from kolora_core.data.layout import TRAIN_DIR
from kolora_core.lora.format import lora_state_from_model
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.training.cache import build_cache
from kolora_core.training.fast_module import FastLoRAModule, add_noise, freeze_except_lora, inject_lora, kolors_train_scheduler
from kolora_core.training.precision import autocast, fabric_precision, seed_weights_dtype
from kolora_core.training.sampling import (
    NUM_TRAIN_TIMESTEPS,
    crop_box_for,
    draw_images,
    resized,
    step_generators,
    step_seed,
    training_tensor,
)
from kolora_core.training.seed_module import SeedLoRAModule

log = logging.getLogger("kolora.train")
REPORT_FILE = "seed_compat.json"
# fp32 on the same device: the two paths run the same kernels, so only summation order may differ.
TOLERANCE = {"32-true": 1e-6, "16-mixed": 2e-3, "bf16-mixed": 1e-2}  # by fabric_precision


def seed_compat_check(
    train: TrainConfig, trainset: Path, rows: list[tuple[str, str]], model_dir: ModelDir, device: str
) -> dict[str, Any]:
    dtype = seed_weights_dtype(train.precision)
    train = train.model_copy(update={"timestep_sampling": "per_batch", "compile": False, "cuda_graphs": False})
    manager = load_model_manager(model_dir, "cpu", dtype)
    fast_unet = copy.deepcopy(manager.fetch_model("sdxl_unet"))
    seed_module = SeedLoRAModule(manager, train, dtype)
    del manager
    inject_lora(fast_unet, train)
    freeze_except_lora(fast_unet)
    seed_lora = lora_state_from_model(seed_module.pipe.unet)
    fast_lora = lora_state_from_model(fast_unet)
    init_equal = seed_lora.keys() == fast_lora.keys() and all(torch.equal(seed_lora[k], fast_lora[k]) for k in seed_lora)

    # Step 0's batch, as the loops draw it (batch_size images; the fast engine's cache variant 0/flip).
    draw = draw_images(train.seed, 0, len(rows), train.batch_size, train.random_flip, 1)
    picked = draw.images.tolist()
    sub_rows = [rows[i] for i in picked]
    images = []
    for position, (index, flip) in enumerate(zip(picked, draw.flips.tolist(), strict=True)):
        path = trainset / TRAIN_DIR / rows[index][0]
        box = None if train.center_crop else crop_box_for(path, train.resolution, train.seed, position, 0)
        images.append(training_tensor(resized(path, train.resolution), train.resolution, box, flip))
    batch = {"text": [text for _, text in sub_rows], "image": torch.stack(images)}
    noise_seed = step_seed(train.seed, 0, "noise")

    seed_module.to(device)
    torch.manual_seed(noise_seed)
    with autocast(train.precision, device):
        seed_loss = seed_module.training_step(batch, 0)
    seed_loss.backward()
    seed_grads = {n: p.grad.detach().float().cpu() for n, p in seed_module.pipe.unet.named_parameters() if p.grad is not None}

    # The fast path: cache the same captions/images with the same (frozen, identical) encoders.
    cache = build_cache(
        seed_module.pipe,
        trainset,
        sub_rows,
        train,
        torch.device(device),
        lambda: autocast(train.precision, device),
        free_encoders=False,
    )
    seed_module.to("cpu")
    del seed_module
    if device == "cuda":
        torch.cuda.empty_cache()
    positions = torch.arange(len(picked))
    latents, embeddings, pooled, time_ids = cache.batch(
        0, positions, draw.flips, torch.zeros_like(positions), None, torch.device(device)
    )
    noise_gen, timestep_gen = step_generators(train.seed, 0, device)
    noise = torch.randn(latents.shape, generator=noise_gen, device=device, dtype=latents.dtype)
    ids = torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=timestep_gen)
    noisy, timesteps = add_noise(kolors_train_scheduler(), latents, noise, ids)
    module = FastLoRAModule(fast_unet, gradient_checkpointing=train.gradient_checkpointing is not False).to(device)
    with autocast(train.precision, device):
        fast_loss = module(noisy, timesteps, embeddings, pooled, noise, time_ids)
    fast_loss.backward()
    fast_grads = {n: p.grad.detach().float().cpu() for n, p in fast_unet.named_parameters() if p.grad is not None}

    seed_value, fast_value = float(seed_loss.detach()), float(fast_loss.detach())
    loss_diff = abs(seed_value - fast_value)
    grad_scale = max(float(g.abs().max()) for g in seed_grads.values())
    grad_diff = (
        max(float((seed_grads[n] - fast_grads[n]).abs().max()) for n in seed_grads)
        if seed_grads.keys() == fast_grads.keys()
        else float("inf")
    )
    tolerance = TOLERANCE[fabric_precision(train.precision)]
    report = {
        "passed": bool(
            init_equal
            and loss_diff <= tolerance * max(1.0, abs(seed_value))
            and grad_diff <= 10 * tolerance * max(grad_scale, 1e-12)
        ),
        "seed_loss": seed_value,
        "fast_loss": fast_value,
        "loss_abs_diff": loss_diff,
        "tolerance": tolerance,
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
        "lora_init_identical": init_equal,
        "lora_tensors": len(seed_lora),
        "timestep_id": int(ids),
        "batch_size": train.batch_size,
        "precision": train.precision,
        "device": device,
        "compared": "diffsynth LightningModelForT2ILoRA.training_step vs kolora fast engine (cached encodings), step 0",
    }
    log.info(
        "seed-compat: seed loss %.8f, fast loss %.8f, |diff| %.2e -> %s",
        report["seed_loss"],
        report["fast_loss"],
        loss_diff,
        "PASS" if report["passed"] else "FAIL",
    )
    return report


def write_report(out: Path, report: dict[str, Any]) -> Path:
    path = out / REPORT_FILE
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
