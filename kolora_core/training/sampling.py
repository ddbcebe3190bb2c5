"""Which images a step sees and which random numbers it draws, as pure functions of (seed, step).

Nothing random in kolora's training loop depends on what ran before: step `s` of a run always
draws the same images, crops, flips, noise and timesteps. That is what makes a resumed run end
with the same LoRA as an uninterrupted one (no RNG state or data-loader position to restore),
and what makes N devices x batch b the same optimization as 1 device x batch N*b for the fast
engine (the global batch is drawn once and each rank takes its slice).

Images go through exactly the transforms of diffsynth's `TextImageDataset` (resize the short side
with PIL bilinear, center or random crop, optional flip, [-1, 1]); only the choice of image is
seeded per step instead of drawn from the global RNG inside data-loader workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

NUM_TRAIN_TIMESTEPS = 1100  # Kolors' EnhancedDDIMScheduler(beta_end=0.014, num_train_timesteps=1100)


def step_seed(seed: int, step: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for one purpose (`stream`) of one step; independent streams never collide."""
    digest = hashlib.blake2b(f"kolora/{seed}/{step}/{stream}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def step_generators(seed: int, step: int, device: torch.device | str) -> tuple[torch.Generator, torch.Generator]:
    """(noise generator on `device`, timestep generator on CPU), both seeded for this step.

    diffsynth's `training_step` draws `randn_like(latents)` on the device and then `randint` on the
    CPU from the global generators; `torch.manual_seed(s)` seeds both with `s`. On a CPU device both
    draws come from the one CPU generator, in that order, so the two generators are the same object.
    """
    device = torch.device(device)
    seed_value = step_seed(seed, step, "noise")
    noise = torch.Generator(device=device).manual_seed(seed_value)
    timesteps = noise if device.type == "cpu" else torch.Generator().manual_seed(seed_value)
    return noise, timesteps


@dataclass(frozen=True)
class StepDraw:
    """The global batch of one step: image index and cached variant per sample."""

    images: torch.Tensor  # (global_batch,) long
    flips: torch.Tensor  # (global_batch,) bool
    crops: torch.Tensor  # (global_batch,) long, which cached random crop (0 with center crop)


def draw_images(seed: int, step: int, n_images: int, global_batch: int, random_flip: bool, n_crops: int) -> StepDraw:
    """Uniform sampling with replacement, as the seed's `TextImageDataset` (random id per item)."""
    generator = torch.Generator().manual_seed(step_seed(seed, step, "data"))
    images = torch.randint(0, n_images, (global_batch,), generator=generator)
    flips = (
        torch.randint(0, 2, (global_batch,), generator=generator).bool()
        if random_flip
        else torch.zeros(global_batch, dtype=torch.bool)
    )
    crops = (
        torch.randint(0, n_crops, (global_batch,), generator=generator)
        if n_crops > 1
        else torch.zeros(global_batch, dtype=torch.long)
    )
    return StepDraw(images, flips, crops)


def draw_bucketed(
    seed: int, step: int, counts: list[int], global_batch: int, random_flip: bool, n_crops: int
) -> tuple[int, StepDraw]:
    """(bucket, the step's draw within it): the bucket with probability proportional to its images (so every image
    is as likely as without buckets), then `draw_images` inside it. Every rank and micro-batch of a step shares it."""
    generator = torch.Generator().manual_seed(step_seed(seed, step, "bucket"))
    group = int(torch.multinomial(torch.tensor(counts, dtype=torch.float64), 1, generator=generator))
    return group, draw_images(seed, step, counts[group], global_batch, random_flip, n_crops)


def caption_dropped(seed: int, step: int, global_batch: int, probability: float) -> torch.Tensor:
    """(global_batch,) bool: which images of the step train with the empty caption (`train.caption_dropout`)."""
    generator = torch.Generator().manual_seed(step_seed(seed, step, "caption_dropout"))
    return torch.rand(global_batch, generator=generator) < probability


def offset_noise(seed: int, step: int, shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """(global_batch, channels, 1, 1) N(0, 1) for `train.noise_offset`, from its own stream (the base noise is unchanged)."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(step_seed(seed, step, "noise_offset"))
    return torch.randn((shape[0], shape[1], 1, 1), generator=generator, device=device, dtype=dtype)


def resized(path: Path, size: int, height: int | None = None) -> Image.Image:
    """Resize so the image covers `size` x `size` (or `size` x `height`): diffsynth's `TextImageDataset` resize,
    byte for byte (short side scaled with PIL bilinear; for buckets the side that must cover its bucket)."""
    image = Image.open(path).convert("RGB")
    width, image_height = image.size
    target_height = size if height is None else height
    scale = max(size / width, target_height / image_height)
    shape = [round(image_height * scale), round(width * scale)]
    return torchvision.transforms.functional.resize(image, shape, interpolation=InterpolationMode.BILINEAR)


def center_box(image: Image.Image, width: int, height: int) -> tuple[int, int]:
    """(top, left) of torchvision's `center_crop` to (height, width)."""
    return round((image.height - height) / 2.0), round((image.width - width) / 2.0)


def bucket_sample(
    path: Path, width: int, height: int, box: tuple[int, int] | None, flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, height, width) in [-1, 1] and its SDXL micro-conditioning `add_time_id`
    [original height, original width, crop top, crop left, height, width] (what the SDXL training scripts pass:
    the size before the resize, the crop's corner in the resized image, mirrored with the image when flipped)."""
    original = Image.open(path).size
    image = resized(path, width, height)
    top, left = center_box(image, width, height) if box is None else box
    pixels = TF.crop(image, top, left, height, width)
    if flip:
        pixels = TF.hflip(pixels)
        left = image.width - left - width
    time_id = torch.tensor([original[1], original[0], top, left, height, width], dtype=torch.long)
    return TF.normalize(TF.to_tensor(pixels), [0.5], [0.5]), time_id


def random_crop_box(image: Image.Image, size: int, generator: torch.Generator, height: int | None = None) -> tuple[int, int]:
    """(top, left) as torchvision's RandomCrop.get_params draws it, from `generator` (crop `size` x `height`)."""
    width, image_height = image.size
    crop_height = size if height is None else height
    top = int(torch.randint(0, image_height - crop_height + 1, size=(1,), generator=generator).item())
    left = int(torch.randint(0, width - size + 1, size=(1,), generator=generator).item())
    return top, left


def crop_box_for(path: Path, size: int, seed: int, image_index: int, crop: int, height: int | None = None) -> tuple[int, int]:
    """The `crop`-th cached random crop of one image: fixed by (seed, image, crop), not by the step."""
    generator = torch.Generator().manual_seed(step_seed(seed, image_index, f"crop{crop}"))
    return random_crop_box(resized(path, size, height), size, generator, height)


def training_tensor(image: Image.Image, size: int, box: tuple[int, int] | None, flip: bool) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: center crop (box None) or the crop at box, then the optional flip."""
    image = TF.center_crop(image, [size, size]) if box is None else TF.crop(image, box[0], box[1], size, size)
    if flip:
        image = TF.hflip(image)
    return TF.normalize(TF.to_tensor(image), [0.5], [0.5])
