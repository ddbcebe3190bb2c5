"""Samples during training: the validation prompts rendered with the current LoRA every `train.validation_every` steps.

A user of the seed sees images only after training. Here the prompts of `train.validation_prompts` (default: the
first two of the story, with their seeds and negative prompts) are rendered at fixed seeds at step 0 (the base
model), every `validation_every` steps and at the end, by kolora's own sampler (`models/sampler.py`, the
generate stage's) driving the UNet being trained: the LoRA is live in it, nothing is merged. The prompts are
encoded while ChatGLM is loaded for the caption cache, so the text encoder is still freed before step 1; the VAE
decoder stays (on the CPU between renders). The outputs: `validation/step-<N>-<i>.png` and `validation_strip.png`
(one row per prompt, one column per rendered step) in the LoRA output, and the images in TensorBoard.

Each render is kept in `<checkpoints>/validation/` as it is made, because a resumed run starts a new output
directory: the strip of a resumed run still shows every step. The sampler draws only from its own per-image
generators and runs in eval mode without gradients, so it changes nothing the next step computes (resume and
graphed runs stay exact). Cost: `Validation.summary()` reports the seconds per image; docs/training.md lists them.

The prompts go through the caption cache, i.e. diffsynth's `KolorsPrompter`, which cuts every text at ChatGLM3's 256
tokens without a word: `warn_cut_prompts` says so per prompt before any model loads (a validation set is a few
prompts), counted with the prompter's own tokenizer (`kolora_core.models.text_length`, shared with the caption and
story-prompt checks).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from kolora_core.config import RunConfig
from kolora_core.models.prompt_embeddings import TOKENS
from kolora_core.models.sampler import KolorsSampler, vae_output_to_image
from kolora_core.models.text_length import cut_renders
from kolora_core.training.cache import TrainCache

log = logging.getLogger("kolora.train")

VALIDATION_DIR = "validation"
STRIP_FILE = "validation_strip.png"
CELL = 256  # px, the longer side of a cell in the strip
LABEL = 14  # px of the step label above each column


@dataclass(frozen=True)
class ValidationRequest:
    """One validation image: what `KolorsSampler.render` needs."""

    index: int
    prompt: str
    negative_prompt: str
    seed: int
    cfg_scale: float
    steps: int
    width: int
    height: int


def validation_requests(config: RunConfig) -> list[ValidationRequest]:
    """`train.validation_prompts` or the story's first two, at train.resolution unless a prompt sets its size."""
    train, generate = config.train, config.generate
    prompts = train.validation_prompts if train.validation_prompts is not None else generate.prompts[:2]
    return [
        ValidationRequest(
            i,
            p.prompt,
            p.negative_prompt,
            p.seed,
            p.cfg_scale if p.cfg_scale is not None else generate.cfg_scale,
            train.validation_steps,
            p.width or train.resolution,
            p.height or train.resolution,
        )
        for i, p in enumerate(prompts)
    ]


def warn_cut_prompts(config: RunConfig) -> None:
    """One warning line per validation prompt (or negative prompt) the text encoder reads only in part."""
    own = config.train.validation_prompts is not None
    for request, what, cut in cut_renders(validation_requests(config)):
        where = (
            f"train.validation_prompts[{request.index}]" if own else f"story #{request.index}; train.validation_prompts is unset"
        )
        fix = "shorten it in train.validation_prompts" if own else "shorten it in the story, or set train.validation_prompts"
        log.warning(
            "validation prompt #%d (%s): the %s is %d tokens, the text encoder (ChatGLM3) reads %d: from '%s' on "
            "(%d tokens) it does not reach the validation images (validation/step-*-%d.png); %s",
            request.index,
            where,
            what,
            cut.tokens,
            TOKENS,
            cut.shown(),
            cut.lost_tokens,
            request.index,
            fix,
        )


class Validation:
    """Renders the requests with the training UNet; keeps each step's images in `keep_dir`."""

    def __init__(
        self,
        requests: list[ValidationRequest],
        cache: TrainCache,
        unet: torch.nn.Module,
        vae_decoder: torch.nn.Module,
        device: torch.device,
        vae_dtype: torch.dtype,
        keep_dir: Path,
        autocast: Callable[[], AbstractContextManager],
    ) -> None:
        self.requests, self.device, self.keep_dir, self.autocast = requests, device, keep_dir, autocast
        self.vae_decoder = vae_decoder.to("cpu")
        # The sampler's text encoder is never called: every prompt's embedding comes from the caption cache.
        self.sampler = KolorsSampler(torch.nn.Identity(), unet, self.vae_decoder, device=str(device), vae_dtype=vae_dtype)
        for request in requests:
            for text in (request.prompt, request.negative_prompt):
                row = cache.text_rows[text]
                self.sampler.embeddings[text] = (cache.embeddings[row : row + 1], cache.pooled[row : row + 1])
        self.seconds: list[float] = []

    @torch.no_grad()
    def render(self, step: int) -> tuple[list[Image.Image], float]:
        """The requests' images with the LoRA as it is after `step` steps; (images, seconds per image)."""
        unet = self.sampler.unet
        self.sampler.embeddings = {k: (e.to(self.device), p.to(self.device)) for k, (e, p) in self.sampler.embeddings.items()}
        self.vae_decoder.to(self.device)
        unet.eval()
        started = time.perf_counter()
        groups: dict[tuple[int, int, bool], list[ValidationRequest]] = {}
        for request in self.requests:
            groups.setdefault((request.width, request.height, request.cfg_scale != 1.0), []).append(request)
        rendered: dict[int, Image.Image] = {}
        try:
            for group in groups.values():
                with self.autocast():  # the UNet as it trains; the VAE decodes in its own dtype, as in generate
                    latents = self.sampler.sample(group)
                for request, pixels in zip(group, self.sampler.decode(latents), strict=True):
                    rendered[request.index] = vae_output_to_image(pixels)
        finally:
            unet.train()
            self.vae_decoder.to("cpu")
        images = [rendered[r.index] for r in self.requests]
        seconds = (time.perf_counter() - started) / len(images)
        self.seconds.append(seconds)
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        for request, image in zip(self.requests, images, strict=True):
            image.save(self.keep_dir / image_name(step, request.index))
        return images, seconds

    def steps(self) -> list[int]:
        """Every step rendered so far, this run or the one it resumed (from the kept images)."""
        found = {int(p.name.split("-")[1]) for p in self.keep_dir.glob("step-*-*.png")} if self.keep_dir.is_dir() else set()
        return sorted(found)

    def write_outputs(self, out: Path) -> list[Path]:
        """validation/step-<N>-<i>.png and the strip into `out`; returns the files written."""
        target = out / VALIDATION_DIR
        target.mkdir(parents=True, exist_ok=True)
        files = []
        for step in self.steps():
            for request in self.requests:
                name = image_name(step, request.index)
                shutil.copyfile(self.keep_dir / name, target / name)
                files.append(target / name)
        strip = progression_strip(self.keep_dir, self.steps(), len(self.requests))
        strip.save(out / STRIP_FILE)
        return [*files, out / STRIP_FILE]

    def summary(self) -> dict[str, Any]:
        return {
            "prompts": len(self.requests),
            "sampler_steps": self.requests[0].steps if self.requests else None,
            "rendered_steps": self.steps(),
            "seconds_per_image": round(sum(self.seconds) / len(self.seconds), 3) if self.seconds else None,
        }


def image_name(step: int, index: int) -> str:
    return f"step-{step:06d}-{index}.png"


def progression_strip(directory: Path, steps: list[int], prompts: int) -> Image.Image:
    """One row per prompt, one column per step (labelled), each image fitted into a CELL x CELL box."""
    strip = Image.new("RGB", (CELL * max(1, len(steps)), (CELL + LABEL) * prompts), "white")
    draw = ImageDraw.Draw(strip)
    for column, step in enumerate(steps):
        for row in range(prompts):
            with Image.open(directory / image_name(step, row)) as image:
                cell = image.convert("RGB")
            cell.thumbnail((CELL, CELL))
            top = row * (CELL + LABEL)
            draw.text((column * CELL + 4, top + 1), f"step {step}", fill="black")
            strip.paste(cell, (column * CELL, top + LABEL))
    return strip
