"""Encode every distinct caption once (ChatGLM) and every training image once (VAE), then free the encoders.

The seed runs the 6.2 B-parameter ChatGLM3 and the VAE encoder on every step, although neither is
trained and the seed's data has one caption for every image. Both encodings are deterministic
functions of (caption) and (image, crop, flip), so caching them is exact:

* captions: `SDXLImagePipeline.encode_prompt` (the seed's own call: 256 tokens, hidden_states[-2],
  pooled = last layer's last token), one caption per call as the seed's batch of 1 does;
* images: `pipe.vae_encoder` (posterior mean x 0.13025) on the seed's transforms. Center crop is one
  tensor per image; `random_flip` caches both flips; random crop caches `train.cached_crops` crops
  per image, drawn once (the trade: a finite set of crops instead of a new crop every step).

With `train.buckets` images are grouped by their nearest aspect-ratio bucket (`kolora_core.data.buckets`), one
latent tensor per bucket, each variant with its SDXL `add_time_id` (original size, crop); without, one square group
with the seed's `[H, W, 0, 0, H, W]`. `train.caption_dropout` adds the empty caption, validation adds its prompts.
Encodings run under the training precision's autocast, as the seed's do inside `training_step`.
The cache lives on the training device when it fits in `DEVICE_CACHE_BYTES`, else in CPU memory.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffsynth import SDXLImagePipeline
from PIL import Image

from kolora_core.config import TrainConfig
from kolora_core.data.buckets import bucket_name, bucket_sizes, nearest_bucket
from kolora_core.data.layout import TRAIN_DIR
from kolora_core.progress import Progress
from kolora_core.training.decoding import Undecodable, decoded, unreadable
from kolora_core.training.sampling import bucket_sample, crop_box_for, resized, training_tensor
from kolora_core.training.step import to_device

log = logging.getLogger("kolora.train")
DEVICE_CACHE_BYTES = 4 << 30


@dataclass
class LatentGroup:
    """The cached latents of one training size: every image (no buckets) or one bucket's images."""

    width: int
    height: int
    images: torch.Tensor  # (n,) long: the trainset row of each member
    latents: torch.Tensor  # (n, variants, 4, height / 8, width / 8): variant = crop * flips + flip
    time_ids: torch.Tensor  # (n, variants, 6) long: SDXL add_time_id of each variant

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LatentGroup:
        latents = self.latents.to(device) if dtype is None else self.latents.to(device, dtype)
        return LatentGroup(self.width, self.height, self.images.to(device), latents, self.time_ids.to(device))


@dataclass
class TrainCache:
    """Latents per (image, variant) in groups of one size, and embeddings per distinct caption, ready to index per step."""

    groups: list[LatentGroup]
    caption_of_image: torch.Tensor  # (images,) long: row of `embeddings` for each trainset row
    embeddings: torch.Tensor  # (captions, 256, text hidden): encoder_hidden_states
    pooled: torch.Tensor  # (captions, text hidden): add_text_embeds
    flips: int  # 2 when random_flip else 1
    crops: int
    empty_caption: int | None = None  # row of the empty caption (train.caption_dropout), else None
    text_rows: dict[str, int] = field(default_factory=dict)  # every encoded text -> its row (validation prompts too)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return sum(self.counts())

    def counts(self) -> list[int]:
        return [len(g.images) for g in self.groups]

    @property
    def latents(self) -> torch.Tensor:
        """All latents, when there is one group (no buckets): (images, variants, 4, h, w) in trainset order."""
        (group,) = self.groups
        return group.latents

    def nbytes(self) -> int:
        tensors = [self.embeddings, self.pooled, *(g.latents for g in self.groups)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TrainCache:
        """On `device`; with `dtype` the latents and embeddings cast (the benchmark's precision variants)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device) if dtype is None else t.to(device, dtype)

        groups = [g.to(device, dtype) for g in self.groups]
        return replace(
            self, groups=groups, caption_of_image=self.caption_of_image.to(device), embeddings=move(self.embeddings),
            pooled=move(self.pooled),
        )  # fmt: skip

    def batch(
        self,
        group: int,
        members: torch.Tensor,
        flips: torch.Tensor,
        crops: torch.Tensor,
        dropped: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, encoder_hidden_states, add_text_embeds, add_time_id) of the given (CPU) members of one group,
        on `device`, without a host sync; `dropped` images take the empty caption."""
        cached = self.groups[group]
        variant = crops * self.flips + flips.long() * (self.flips - 1)
        at = cached.latents.device
        members, variant = to_device(members, at), to_device(variant, at)
        rows = self.caption_of_image[cached.images[members]]
        if dropped is not None and self.empty_caption is not None:
            rows = torch.where(to_device(dropped, at), torch.full_like(rows, self.empty_caption), rows)
        return (
            to_device(cached.latents[members, variant], device),
            to_device(self.embeddings[rows], device),
            to_device(self.pooled[rows], device),
            to_device(cached.time_ids[members, variant].reshape(-1), device),
        )


class _ImageVariants(torch.utils.data.Dataset):
    """(image, crop, flip) -> (training tensor, add_time_id), decoded in data-loader workers."""

    def __init__(
        self, paths: list[Path], indices: list[int], size: tuple[int, int], train: TrainConfig, crops: int, flips: int
    ) -> None:
        self.paths, self.indices, self.size, self.train, self.crops, self.flips = paths, indices, size, train, crops, flips

    def __len__(self) -> int:
        return len(self.paths) * self.crops * self.flips

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded strictly (`kolora_core.training.decoding`), a PNG's rows counted once per image."""
        variants = self.crops * self.flips
        return decoded(self.paths[index // variants], lambda: self._variant(index), rows=index % variants == 0)

    def _variant(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        member, variant = divmod(index, self.crops * self.flips)
        crop, flip = divmod(variant, self.flips)
        path, image_index, (width, height) = self.paths[member], self.indices[member], self.size
        if not self.train.buckets:  # the seed's square transform and its constant [H, W, 0, 0, H, W]
            size = self.train.resolution
            box = None if self.train.center_crop else crop_box_for(path, size, self.train.seed, image_index, crop)
            return training_tensor(resized(path, size), size, box, bool(flip)), torch.tensor([size, size, 0, 0, size, size])
        box = None if self.train.center_crop else crop_box_for(path, width, self.train.seed, image_index, crop, height)
        return bucket_sample(path, width, height, box, bool(flip))


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
def encode_group(
    pipe: SDXLImagePipeline,
    paths: list[Path],
    indices: list[int],
    size: tuple[int, int],
    train: TrainConfig,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    crops: int,
    flips: int,
    progress: Progress,
) -> LatentGroup:
    """One group's latents (n, crops * flips, 4, h, w) and time ids, one image per VAE call as the seed's batch of 1."""
    pipe.vae_encoder.to(device)
    data = _ImageVariants(paths, indices, size, train, crops, flips)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=min(train.num_workers, len(data)))
    latents, time_ids = [], []
    try:
        for image, time_id in loader:
            with autocast():
                latents.append(pipe.vae_encoder(image.to(dtype=pipe.torch_dtype, device=device))[0].cpu())
            time_ids.append(time_id[0])
            progress.advance()
    except Undecodable as exc:
        raise unreadable(exc) from None
    stacked = torch.stack(latents)
    return LatentGroup(
        size[0],
        size[1],
        torch.tensor(indices, dtype=torch.long),
        stacked.reshape(len(paths), crops * flips, *stacked.shape[1:]),
        torch.stack(time_ids).reshape(len(paths), crops * flips, 6),
    )


def image_groups(paths: list[Path], train: TrainConfig) -> dict[tuple[int, int], list[int]]:
    """(width, height) -> trainset rows: one square group without buckets, else each image's nearest bucket."""
    if not train.buckets:
        return {(train.resolution, train.resolution): list(range(len(paths)))}
    sizes = bucket_sizes(train.resolution)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            groups.setdefault(nearest_bucket(*image.size, sizes), []).append(index)
    return dict(sorted(groups.items(), key=lambda item: item[0][0] / item[0][1]))


def build_cache(
    pipe: SDXLImagePipeline,
    trainset: Path,
    rows: list[tuple[str, str]],
    train: TrainConfig,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    free_encoders: bool = True,
    keep_decoder: bool = False,
    extra_texts: Sequence[str] = (),
) -> TrainCache:
    """Encode the training set once; with `free_encoders` the text encoder and VAE are released after (the VAE
    decoder stays with `keep_decoder`: validation samples need it)."""
    captions = list(dict.fromkeys(text for _, text in rows))
    if train.caption_dropout:
        captions.append("")  # what a dropped caption trains with
    captions = list(dict.fromkeys([*captions, *extra_texts]))  # validation prompts: encoded now, while ChatGLM is here
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
    progress = Progress(log, "caching latents (VAE)", len(rows) * crops * flips, "images")
    groups = [
        encode_group(pipe, [paths[i] for i in indices], indices, size, train, device, autocast, crops, flips, progress)
        for size, indices in image_groups(paths, train).items()
    ]
    image_seconds = time.perf_counter() - started
    if free_encoders:
        free_module(pipe, "vae_encoder")
        if not keep_decoder:
            free_module(pipe, "vae_decoder")
    stats: dict[str, Any] = {
        "captions_encoded": len(captions),
        "caption_seconds": round(text_seconds, 3),
        "latents_encoded": sum(g.latents.shape[0] * g.latents.shape[1] for g in groups),
        "latent_seconds": round(image_seconds, 3),
    }
    if train.buckets:
        stats["buckets"] = {bucket_name((g.width, g.height)): len(g.images) for g in groups}
        log.info("buckets (images per WIDTHxHEIGHT): %s", stats["buckets"])
    cache = TrainCache(
        groups,
        torch.tensor([caption_row[text] for _, text in rows], dtype=torch.long),
        embeddings,
        pooled,
        flips,
        crops,
        caption_row[""] if train.caption_dropout else None,
        caption_row,
        stats,
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
        cache.groups[0].latents.device,
    )
    return cache
