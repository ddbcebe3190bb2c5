"""`smoke://`: a small dataset kolora draws itself, deterministic from each image's index.

Anime-ish chibi faces (big eyes, coloured hair, sparkles on a gradient) drawn with PIL, 96-160 px so they
pass the smoke profile's filter (`image_shape_filter` min 96 px, `image_aspect_ratio_filter` 0.5-2.0),
except two kinds the filter must drop, so its kept/dropped counts mean something:

* index % 8 == 3: too small (64-88 px per side)           -> dropped by image_shape_filter
* index % 8 == 6: too wide (aspect ratio 2.5, sides >= 100) -> dropped by image_aspect_ratio_filter

16 images (the smoke profile) -> 12 kept, 2 too small, 2 too wide.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

from PIL import Image, ImageDraw

TOO_SMALL, TOO_WIDE = 3, 6
PALETTE = {
    "pink": (255, 120, 180),
    "blue": (90, 150, 255),
    "purple": (160, 100, 230),
    "silver": (210, 215, 230),
    "orange": (255, 160, 60),
    "green": (80, 200, 140),
    "red": (230, 60, 80),
    "black": (50, 45, 70),
}


def smoke_kind(index: int) -> str:
    return {TOO_SMALL: "too_small", TOO_WIDE: "too_wide"}.get(index % 8, "ok")


def smoke_size(index: int) -> tuple[int, int]:
    rng = random.Random(f"size-{index}")
    kind = smoke_kind(index)
    if kind == "too_small":
        return rng.randint(64, 88), rng.randint(64, 88)
    if kind == "too_wide":
        height = rng.randint(100, 120)
        return int(height * 2.5), height
    return rng.randint(96, 160), rng.randint(96, 160)


def _gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    width, height = size
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / max(height - 1, 1)
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return column.resize((width, height))


def draw_smoke_image(index: int) -> tuple[Image.Image, str]:
    """The image and its source caption for one index."""
    rng = random.Random(f"smoke-{index}")
    width, height = smoke_size(index)
    hair_name, eye_name = rng.sample(sorted(PALETTE), 2)
    hair, eyes = PALETTE[hair_name], PALETTE[eye_name]
    sky = tuple(rng.randint(150, 255) for _ in range(3))
    im = _gradient((width, height), sky, (255, 240, 250))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 8)):  # sparkles
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(1, 4)
        draw.polygon([(x, y - 2 * r), (x + r, y), (x, y + 2 * r), (x - r, y)], fill=(255, 255, 200))
    side = min(width, height)
    cx, cy, head = width // 2, height // 2 + side // 12, int(side * 0.34)
    draw.ellipse([cx - head, cy - head - side // 8, cx + head, cy + head - side // 8], fill=hair)  # hair back
    draw.ellipse([cx - head, cy - head, cx + head, cy + head], fill=(255, 225, 205))  # face
    for k in range(5):  # fringe spikes
        x0 = cx - head + k * (2 * head) // 5
        draw.polygon([(x0, cy - head + 2), (x0 + head // 5, cy - head // 3), (x0 + 2 * head // 5, cy - head + 2)], fill=hair)
    ew, eh = max(head // 4, 2), max(head // 3, 3)
    for sx in (-1, 1):  # big eyes with highlights
        ex = cx + sx * head // 2
        draw.ellipse([ex - ew, cy - eh // 2, ex + ew, cy + eh], fill=(255, 255, 255))
        draw.ellipse([ex - ew + 1, cy - eh // 2 + 2, ex + ew - 1, cy + eh], fill=eyes)
        draw.ellipse([ex - ew // 2, cy - eh // 4, ex, cy + eh // 6], fill=(255, 255, 255))
        draw.ellipse([ex + sx * ew + sx * 2 - 3, cy + eh + 2, ex + sx * ew + sx * 2 + 3, cy + eh + 5], fill=(255, 170, 180))
    draw.arc([cx - head // 6, cy + head // 2, cx + head // 6, cy + head // 2 + head // 6], 20, 160, fill=(180, 60, 80))
    return im, f"a chibi anime girl with {hair_name} hair and {eye_name} eyes"


def smoke_items(count: int) -> Iterator[tuple[str, bytes, str]]:
    """(original_id, PNG bytes, caption) for indices 0..count-1."""
    for index in range(count):
        im, caption = draw_smoke_image(index)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        yield f"smoke-{index:04d}", buf.getvalue(), caption
