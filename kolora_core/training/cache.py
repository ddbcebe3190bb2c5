"""Encode every distinct caption once (ChatGLM) and every training image once (VAE), then free the encoders.

The seed runs the 6.2 B-parameter ChatGLM3 and the VAE encoder on every step, although neither is
trained and the seed's data has one caption for every image. Both encodings are deterministic
functions of (caption) and (image, crop, flip), so caching them is exact:

* captions: `SDXLImagePipeline.encode_prompt` (the seed's own call: 256 tokens, hidden_states[-2],
  pooled = last layer's last token), one caption per call as the seed's batch of 1 does;
* images: `pipe.vae_encoder` (posterior mean x 0.13025) on the seed's transforms. Center crop is one
  tensor per image; `random_flip` caches both flips; random crop caches `train.cached_crops` crops
  per image, drawn once (the trade: a finite set of crops instead of a new crop every step).

Encodings run under the training precision's autocast, as the seed's do inside `training_step`.
The cache lives on the training device when it fits in `DEVICE_CACHE_BYTES`, else in CPU memory.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffsynth import SDXLImagePipeline

from kolora_core.config import TrainConfig
from kolora_core.data.layout import TRAIN_DIR
from kolora_core.progress import Progress
from kolora_core.training.sampling import crop_box_for, resized, training_tensor
from kolora_core.training.step import to_device

log = logging.getLogger("kolora.train")
DEVICE_CACHE_BYTES = 4 << 30


@dataclass
class TrainCache:
    """Latents per (image, variant) and embeddings per distinct caption, ready to index per step."""

    latents: torch.Tensor  # (images, variants, 4, h, w): variant = crop * flips + flip
    caption_of_image: torch.Tensor  # (images,) long: row of `embeddings` for each image
    embeddings: torch.Tensor  # (captions, 256, text hidden): encoder_hidden_states
    pooled: torch.Tensor  # (captions, text hidden): add_text_embeds
    flips: int  # 2 when random_flip else 1
    crops: int
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return self.latents.shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.latents, self.embeddings, self.pooled))

    def to(self, device: torch.device | str) -> TrainCache:
        return TrainCache(
            self.latents.to(device),
            self.caption_of_image.to(device),
            self.embeddings.to(device),
            self.pooled.to(device),
            self.flips,
            self.crops,
            self.stats,
        )

    def batch(
        self, images: torch.Tensor, flips: torch.Tensor, crops: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, encoder_hidden_states, add_text_embeds) of the given (CPU) samples, on `device`, without a host sync."""
        variant = crops * self.flips + flips.long() * (self.flips - 1)
        images, variant = to_device(images, self.latents.device), to_device(variant, self.latents.device)
        rows = self.caption_of_image[images]
        return (
            to_device(self.latents[images, variant], device),
            to_device(self.embeddings[rows], device),
            to_device(self.pooled[rows], device),
        )


class _ImageVariants(torch.utils.data.Dataset):
    """(image, crop, flip) -> training tensor, decoded in data-loader workers."""

    def __init__(self, paths: list[Path], train: TrainConfig, crops: int, flips: int) -> None:
        self.paths, self.train, self.crops, self.flips = paths, train, crops, flips

    def __len__(self) -> int:
        return len(self.paths) * self.crops * self.flips

    def __getitem__(self, index: int) -> torch.Tensor:
        image_index, variant = divmod(index, self.crops * self.flips)
        crop, flip = divmod(variant, self.flips)
        size = self.train.resolution
        box = None if self.train.center_crop else crop_box_for(self.paths[image_index], size, self.train.seed, image_index, crop)
        return training_tensor(resized(self.paths[image_index], size), size, box, bool(flip))


def free_module(pipe: SDXLImagePipeline, name: str) -> None:
    """Drop a pipeline's model and give its memory back (the point of caching)."""
    setattr(pipe, name, None)
    if name == "text_encoder_kolors":
        pipe.prompter.text_encoder = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.no_grad()
def encode_captions(
    pipe: SDXLImagePipeline, captions: list[str], device: torch.device, autocast: Callable[[], AbstractContextManager]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each caption once through the seed's `encode_prompt`; returns (embeddings, pooled) on the CPU."""
    pipe.device = device
    pipe.text_encoder_kolors.to(device)
    embeddings, pooled = [], []
    progress = Progress(log, "caching captions (ChatGLM)", len(captions), "captions")
    for caption in captions:
        with autocast():
            emb = pipe.encode_prompt([caption], positive=True)
        embeddings.append(emb["encoder_hidden_states"][0].cpu())
        pooled.append(emb["add_text_embeds"][0].cpu())
        progress.advance()
    return torch.stack(embeddings), torch.stack(pooled)


@torch.no_grad()
def encode_images(
    pipe: SDXLImagePipeline,
    paths: list[Path],
    train: TrainConfig,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    crops: int,
    flips: int,
) -> torch.Tensor:
    """(images, crops * flips, 4, h, w) latents, one image per VAE call as the seed's batch of 1."""
    pipe.vae_encoder.to(device)
    data = _ImageVariants(paths, train, crops, flips)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=min(train.num_workers, len(data)))
    latents = []
    progress = Progress(log, "caching latents (VAE)", len(data), "images")
    for image in loader:
        with autocast():
            latents.append(pipe.vae_encoder(image.to(dtype=pipe.torch_dtype, device=device))[0].cpu())
        progress.advance()
    stacked = torch.stack(latents)
    return stacked.reshape(len(paths), crops * flips, *stacked.shape[1:])


def build_cache(
    pipe: SDXLImagePipeline,
    trainset: Path,
    rows: list[tuple[str, str]],
    train: TrainConfig,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    free_encoders: bool = True,
) -> TrainCache:
    """Encode the training set once; with `free_encoders` the text encoder and VAE are released after."""
    captions = list(dict.fromkeys(text for _, text in rows))
    caption_row = {caption: i for i, caption in enumerate(captions)}
    crops = 1 if train.center_crop else train.cached_crops
    flips = 2 if train.random_flip else 1
    log.info(
        "caching %d caption(s) (ChatGLM) and %d latent(s) (VAE, %d image(s) x %d variant(s)) before the first step",
        len(captions),
        len(rows) * crops * flips,
        len(rows),
        crops * flips,
    )
    started = time.perf_counter()
    embeddings, pooled = encode_captions(pipe, captions, device, autocast)
    text_seconds = time.perf_counter() - started
    if free_encoders:
        free_module(pipe, "text_encoder_kolors")
    started = time.perf_counter()
    paths = [trainset / TRAIN_DIR / name for name, _ in rows]
    latents = encode_images(pipe, paths, train, device, autocast, crops, flips)
    image_seconds = time.perf_counter() - started
    if free_encoders:
        free_module(pipe, "vae_encoder")
        free_module(pipe, "vae_decoder")
    cache = TrainCache(
        latents,
        torch.tensor([caption_row[text] for _, text in rows], dtype=torch.long),
        embeddings,
        pooled,
        flips,
        crops,
        {
            "captions_encoded": len(captions),
            "caption_seconds": round(text_seconds, 3),
            "latents_encoded": latents.shape[0] * latents.shape[1],
            "latent_seconds": round(image_seconds, 3),
        },
    )
    if cache.nbytes() <= DEVICE_CACHE_BYTES:
        cache = cache.to(device)
    log.info(
        "cached %d caption(s) in %.1f s and %d latent(s) in %.1f s (%.1f MiB on %s); encoders freed",
        len(captions),
        text_seconds,
        cache.stats["latents_encoded"],
        image_seconds,
        cache.nbytes() / 2**20,
        cache.latents.device,
    )
    return cache
