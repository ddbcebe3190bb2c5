"""The seed's story grid: rows of `columns` images in story order, then one resize to fit the final size.

Nothing is stretched: a story of mixed sizes, or a grid of other rows than the seed's 2x4, is not the seed's
picture, and resizing every image to the first one's size (or the whole grid to 1024x2048) squashed them.
"""

from __future__ import annotations

from PIL import Image

from kolora_core.config import EvaluateConfig


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled to fit inside `box`, aspect ratio kept (at least 1 px a side)."""
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def story_grid(images: list[Image.Image], evaluate: EvaluateConfig) -> Image.Image:
    """Tile like the seed's np.concatenate (2 per row, 4 rows), then resize to fit grid_width x grid_height.

    A cell is as wide as the widest image and as tall as the tallest; each image is fitted into its cell, aspect
    ratio kept, centred on black. The grid keeps its own aspect ratio too: it is grid_width x grid_height when its
    cells have that shape (the seed's 2x4 square images: 1024x2048), otherwise as large as fits inside.
    Missing cells (fewer prompts than cells) stay black.
    """
    cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    canvas = Image.new("RGB", (cell_w * evaluate.grid_columns, cell_h * evaluate.grid_rows))
    for i, image in enumerate(images):
        row, col = divmod(i, evaluate.grid_columns)
        w, h = _fit(image.size, (cell_w, cell_h))
        left, top = col * cell_w + (cell_w - w) // 2, row * cell_h + (cell_h - h) // 2
        canvas.paste(image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), (left, top))
    return canvas.resize(_fit(canvas.size, (evaluate.grid_width, evaluate.grid_height)), Image.Resampling.LANCZOS)
