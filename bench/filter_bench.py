"""Filter-stage throughput on this machine: generated ~1024 px images, the seed recipe (`full` profile's filter.ops).

Draws `--images` pictures at seed-like sizes (1024x1024, 1152x896, 1024x1536 pass; 896x896 and 2304x1024 are
dropped by image_shape_filter / image_aspect_ratio_filter), ingests them (not timed in the headline), then times
the whole filter stage (verify + Data-Juicer + trainset + reports) and Data-Juicer alone. Prints one JSON line:

    python bench/filter_bench.py --images 128
    {"bench": "filter", "images": 64, "kept": 40, ..., "images_per_s": ..., "datajuicer_images_per_s": ...}

Data-Juicer's time includes its start-up (~5-10 s of imports on 2 cores), so small runs understate its rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kolora_core.config import load_config
from kolora_core.data import filtering
from kolora_core.data.datajuicer import effective_np
from kolora_core.data.ingest import ingest_to

SIZES = [(1024, 1024), (1152, 896), (1024, 1536), (896, 896), (2304, 1024)]


def draw(index: int, size: tuple[int, int]) -> Image.Image:
    width, height = size
    im = Image.new("RGB", size, ((index * 37) % 256, (index * 91) % 256, 200))
    d = ImageDraw.Draw(im)
    for k in range(12):
        x, y, r = (index * 131 + k * 173) % width, (index * 71 + k * 97) % height, 40 + (k * 29) % 160
        d.ellipse((x - r, y - r, x + r, y + r), fill=((k * 60) % 256, (index * 13 + k * 40) % 256, (k * 90) % 256))
    return im


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument(
        "--np", type=int, default=None, help="Data-Juicer processes (default: the full profile's, capped at CPUs)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and outputs here (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    config = load_config("full")
    if args.np:
        config = config.model_copy(update={"filter": config.filter.model_copy(update={"np": args.np})})
    with tempfile.TemporaryDirectory(prefix="kolora-filter-bench-") as tmp:
        root = args.workdir or Path(tmp)
        src, dataset = root / "src", root / "dataset"
        src.mkdir(parents=True, exist_ok=True)
        dataset.mkdir(parents=True, exist_ok=True)
        for i in range(args.images):
            draw(i, SIZES[i % len(SIZES)]).save(src / f"{i:05d}.png", compress_level=1)
        started = time.perf_counter()
        ingest_to(config.ingest.model_copy(update={"source": str(src)}), dataset)
        ingest_s = time.perf_counter() - started

        dj_seconds: list[float] = []
        real_run = filtering.run_datajuicer

        def timed(*a, **k):
            result = real_run(*a, **k)
            dj_seconds.append(result.seconds)
            return result

        filtering.run_datajuicer = timed
        for name in ("trainset", "report"):
            (root / name).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        report = filtering.filter_dataset(config, dataset, root / "trainset", root / "report")
        seconds = time.perf_counter() - started

    result = {
        "bench": "filter",
        "images": args.images,
        "resolution": "896-2304 px (seed-like, 1024 px median)",
        "kept": report["kept"],
        "dropped": report["dropped"],
        "ops": [name for op in config.filter.ops for name in op],
        "np": effective_np(config.filter.np),
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 2),
        "images_per_s": round(args.images / seconds, 2),
        "datajuicer_seconds": round(dj_seconds[0], 2),
        "datajuicer_images_per_s": round(args.images / dj_seconds[0], 2),
        "ingest_images_per_s": round(args.images / ingest_s, 2),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
