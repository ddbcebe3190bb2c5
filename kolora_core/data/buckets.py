"""Aspect-ratio buckets: the training sizes of about one pixel area that images are grouped into.

SDXL-family models are trained on many aspect ratios at about 1024^2 pixels, with the original size and crop
passed in as conditioning. Cropping every image to a square (the seed) throws away the edges of every portrait
and landscape image and teaches the model that everything is square. With buckets each image trains at the
size nearest its own aspect ratio and loses at most a sliver to the crop.

Buckets are (width, height) pairs in multiples of `STEP` (the Kolors UNet's size step): for each short side, the
longest long side whose area stays within `resolution^2` and whose aspect within `MAX_ASPECT` (the range of the
seed's aspect-ratio filter), kept when it holds at least `MIN_AREA` of the target area; portraits mirror
landscapes. An image belongs to the bucket whose aspect ratio is nearest its own in log space (so
2:1 and 1:2 are equally far from 1:1). Pure Python: the filter stage reports the histogram without torch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

STEP = 64
MAX_ASPECT = 2.0
MIN_AREA = 0.8  # a bucket holds at least this fraction of the target area


def bucket_sizes(resolution: int) -> list[tuple[int, int]]:
    """(width, height) buckets for a target area of `resolution`^2, narrowest first (portraits mirror landscapes)."""
    area = resolution * resolution
    landscape: dict[int, int] = {}  # long side -> the largest short side that fits with it
    for short in range(STEP, resolution + 1, STEP):
        long = min(area // short // STEP * STEP, int(MAX_ASPECT * short) // STEP * STEP)
        if long >= short and long * short >= MIN_AREA * area:
            landscape[long] = max(short, landscape.get(long, 0))
    sizes = {(long, short) for long, short in landscape.items()} | {(short, long) for long, short in landscape.items()}
    if not sizes:  # a resolution below one STEP: the square of the largest multiple of 8 that fits
        side = max(8, resolution // 8 * 8)
        sizes.add((side, side))
    return sorted(sizes, key=lambda wh: wh[0] / wh[1])


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's (log distance; ties go to the squarer bucket)."""
    aspect = math.log(width / height)
    return min(sizes, key=lambda wh: (abs(math.log(wh[0] / wh[1]) - aspect), abs(math.log(wh[0] / wh[1]))))


def bucket_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def bucket_histogram(image_sizes: Iterable[tuple[int, int]], resolution: int) -> dict[str, int]:
    """Images per bucket ("WIDTHxHEIGHT" -> count), narrowest bucket first; buckets without images are left out."""
    sizes = bucket_sizes(resolution)
    counts = Counter(nearest_bucket(w, h, sizes) for w, h in image_sizes)
    return {bucket_name(size): counts[size] for size in sizes if counts[size]}
