"""Which prompts a generate process renders, how each image records how it was made, and reading those records back.

`generations.jsonl` (one `Generation` per line, beside the PNGs it names) is read by evaluate (the candidate's
images), by publish (the story images travel with the release) and by evaluate again for the champion's
images, which come from a bucket: a record's `file` must be a plain file name next to its manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from kolora_core.config import GenerateConfig, StoryPrompt
from kolora_core.errors import KoloraError
from kolora_core.inference.infotext import parameters_text

GENERATIONS = "generations.jsonl"
PNG_KEY = "kolora"
A1111_KEY = "parameters"


def shard_prompts(generate: GenerateConfig) -> list[tuple[int, StoryPrompt]]:
    """Prompts of this shard with their story index; index i goes to shard i % shards.

    Keeping the global index in file names lets the evaluate stage merge shards back into story order.
    """
    return [(i, p) for i, p in enumerate(generate.prompts) if i % generate.shards == generate.shard]


@dataclass(frozen=True)
class Job:
    """One image to render: the story prompt with every per-prompt override resolved against `generate`."""

    index: int
    prompt: str
    negative_prompt: str
    seed: int
    cfg_scale: float
    steps: int
    width: int
    height: int
    lora_strength: float


def resolve_job(index: int, story: StoryPrompt, generate: GenerateConfig) -> Job:
    def pick(value: float | int | None, default: float | int) -> float | int:
        return default if value is None else value

    return Job(
        index=index,
        prompt=story.prompt,
        negative_prompt=story.negative_prompt,
        seed=story.seed,
        cfg_scale=float(pick(story.cfg_scale, generate.cfg_scale)),
        steps=int(pick(story.steps, generate.steps)),
        width=int(pick(story.width, generate.width)),
        height=int(pick(story.height, generate.height)),
        lora_strength=float(pick(story.lora_strength, generate.lora_strength)),
    )


def shard_jobs(generate: GenerateConfig) -> list[Job]:
    """This shard's jobs in story order, overrides resolved."""
    return [resolve_job(i, p, generate) for i, p in shard_prompts(generate)]


@dataclass(frozen=True)
class Generation(Job):
    """Everything needed to reproduce one image (its job plus what rendered it), stored in its PNG and generations.jsonl.

    `seconds` is the image's share of its batch's wall time (the fast engine renders several at once).
    """

    file: str
    lora_scale: float
    lora_sha256: str
    base_model_sha256: str
    seconds: float
    base_model: str = ""
    engine: str = ""
    story_size: int = 0
    unet_sha256: str = ""
    lora_a1111_name: str = ""  # how A1111 names lora_kohya.safetensors (its ss_output_name); "" = no kohya export
    lora_a1111_hash: str = ""  # the short hash A1111 shows for that file


def image_name(index: int) -> str:
    return f"{index:03d}.png"


def save_generation(image: Image.Image, out_dir: Path, record: Generation) -> None:
    """The PNG with two text chunks: A1111's `parameters` (what webuis, Civitai and PNG-info readers show) and
    `kolora` (the whole record as JSON). No `prompt`/`workflow` chunk: ComfyUI reads those as its own JSON graph.
    `add_text` as A1111 uses it: tEXt for Latin-1 text, iTXt (UTF-8) otherwise, e.g. for Chinese prompts.
    """
    info = PngInfo()
    info.add_text(A1111_KEY, parameters_text(record))
    info.add_itxt(PNG_KEY, json.dumps(asdict(record), ensure_ascii=False, sort_keys=True))
    image.save(out_dir / record.file, pnginfo=info)
    with (out_dir / GENERATIONS).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(record), ensure_ascii=False, sort_keys=True) + "\n")


def read_png_record(path: Path) -> dict[str, object]:
    with Image.open(path) as image:
        return json.loads(image.text[PNG_KEY])


def _record(manifest: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
        index, file = int(record["index"]), str(record["file"])
    except (ValueError, TypeError, KeyError):
        raise KoloraError(f"{manifest} line {number} is not a generation record (needs index and file)") from None
    if file in {"", ".", ".."} or Path(file).name != file or "\\" in file:
        raise KoloraError(f"{manifest} line {number}: file {file!r} is not a plain file name beside the manifest")
    return record | {"index": index, "path": manifest.parent / file}


def collect_generations(images_dir: Path) -> list[dict[str, Any]]:
    """Records of every generated image (with `path` set), from one output dir or a dir of shard outputs, in story order."""
    manifests = sorted(images_dir.rglob(GENERATIONS))
    if not manifests:
        raise KoloraError(f"no {GENERATIONS} under {images_dir}: pass the generate stage's images directory")
    records = []
    for manifest in manifests:
        lines = manifest.read_text(encoding="utf-8").splitlines()
        records += [_record(manifest, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    indices = [r["index"] for r in records]
    if len(set(indices)) != len(indices):
        raise KoloraError(f"{images_dir} holds the same story index twice: shards overlap; rerun generate with distinct shards")
    return sorted(records, key=lambda r: r["index"])
