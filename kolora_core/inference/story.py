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
from kolora_core.data.confine import Escape, resolve_inside
from kolora_core.errors import KoloraError
from kolora_core.inference.infotext import parameters_text
from kolora_core.relative_names import is_portable_name

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
    fp8: bool = False  # generate.fp8: the feed-forward products ran in FP8 (the image differs slightly from fp16's)


def image_name(index: int) -> str:
    return f"{index:03d}.png"


def record_line(record: Generation) -> str:
    """A record as one line of generations.jsonl (and the PNG's `kolora` text chunk)."""
    return json.dumps(asdict(record), ensure_ascii=False, sort_keys=True)


def write_png(image: Image.Image, path: Path, record: Generation) -> None:
    """The PNG with two text chunks: A1111's `parameters` (what webuis, Civitai and PNG-info readers show) and
    `kolora` (the whole record as JSON). No `prompt`/`workflow` chunk: ComfyUI reads those as its own JSON graph.
    `add_text` as A1111 uses it: tEXt for Latin-1 text, iTXt (UTF-8) otherwise, e.g. for Chinese prompts.
    """
    info = PngInfo()
    info.add_text(A1111_KEY, parameters_text(record))
    info.add_itxt(PNG_KEY, record_line(record))
    image.save(path, format="PNG", pnginfo=info)


def save_generation(image: Image.Image, out_dir: Path, record: Generation) -> None:
    """One finished image and its generations.jsonl line (how tests and tools write an images/ directory)."""
    write_png(image, out_dir / record.file, record)
    with (out_dir / GENERATIONS).open("a", encoding="utf-8") as handle:
        handle.write(record_line(record) + "\n")


def read_png_record(path: Path) -> dict[str, object]:
    with Image.open(path) as image:
        return json.loads(image.text[PNG_KEY])


REQUIRED_FIELDS = ("index", "file", "prompt", "negative_prompt", "seed", "seconds")  # what evaluate's report copies


def _record(manifest: Path, number: int, line: bytes) -> dict[str, Any]:
    """One line of generations.jsonl (from the bucket on Argo: untrusted) with `path`, its image inside the shard dir."""
    where = f"{manifest} line {number}"
    try:
        record = json.loads(line.decode("utf-8"))
        missing = [k for k in REQUIRED_FIELDS if k not in record]  # a list or number raises TypeError here
        if missing:
            raise KeyError(", ".join(missing))
        file, index = record["file"], record["index"]
        if not isinstance(file, str) or not isinstance(index, int):
            raise TypeError("file must be a string and index an integer")
    except (ValueError, TypeError, KeyError) as exc:  # not UTF-8, not JSON, not an object, fields missing or wrong
        raise KoloraError(f"{where} is not a generation record ({type(exc).__name__}: {exc}): rerun generate") from None
    if "/" in file or not is_portable_name(file):
        raise KoloraError(f"{where}: file {file!r} is not a plain file name beside the manifest; rerun generate")
    root = manifest.parent.resolve()
    try:
        return record | {"path": resolve_inside(root, root / file)}
    except Escape as exc:
        raise KoloraError(f"{where} names the image {file!r}: {exc.reason}; rerun generate") from None


def require_lora(records: list[dict[str, Any]], lora_sha256: str, images_dir: Path) -> None:
    """Refuse images rendered with another LoRA file than `lora_sha256` (each record names its own): scored or
    released beside this LoRA, another run's story would pass a gate for it."""
    for record in records:
        if record.get("lora_sha256") != lora_sha256:
            raise KoloraError(
                f"{images_dir}: {record.get('file')} was rendered with LoRA {str(record.get('lora_sha256'))[:12]}, not "
                f"--lora's {lora_sha256[:12]}: pass the images generate made with this LoRA, or generate them again"
            )


def collect_generations(images_dir: Path) -> list[dict[str, Any]]:
    """Records of every generated image (with `path` set), from one output dir or a dir of shard outputs, in story order."""
    manifests = sorted(images_dir.rglob(GENERATIONS))
    if not manifests:
        raise KoloraError(f"no {GENERATIONS} under {images_dir}: pass the generate stage's images directory")
    records = []
    for manifest in manifests:
        lines = manifest.read_bytes().splitlines()
        records += [_record(manifest, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    indices = [r["index"] for r in records]
    if len(set(indices)) != len(indices):
        raise KoloraError(f"{images_dir} holds the same story index twice: shards overlap; rerun generate with distinct shards")
    return sorted(records, key=lambda r: r["index"])
