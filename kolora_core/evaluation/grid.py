"""The seed's story grid: rows of `columns` images in story order, then one resize to the final size."""

from __future__ import annotations

from PIL import Image

from kolora_core.config import EvaluateConfig


def story_grid(images: list[Image.Image], evaluate: EvaluateConfig) -> Image.Image:
    """Tile like the seed's np.concatenate (2 per row, 4 rows) and resize to grid_width x grid_height.

    Cells take the first image's size; missing cells (fewer prompts than cells) stay black.
    """
    cell_w, cell_h = images[0].size
    canvas = Image.new("RGB", (cell_w * evaluate.grid_columns, cell_h * evaluate.grid_rows))
    for i, image in enumerate(images):
        row, col = divmod(i, evaluate.grid_columns)
        canvas.paste(image.convert("RGB").resize((cell_w, cell_h)), (col * cell_w, row * cell_h))
    return canvas.resize((evaluate.grid_width, evaluate.grid_height), Image.Resampling.LANCZOS)
