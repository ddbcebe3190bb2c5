"""The A1111 `parameters` text every generated PNG carries: the one owner of that format.

AUTOMATIC1111's webui, Forge and Civitai read generation info from a PNG text chunk named `parameters`
(A1111 `modules/images.py` writes it, `modules/infotext_utils.py` `parse_generation_parameters` reads it):

    <prompt>[ <lora:NAME:WEIGHT>]
    Negative prompt: <negative prompt>          (line omitted when empty)
    Steps: 4, Sampler: DDIM, CFG scale: 4.0, Seed: 7, Size: 64x64, Model hash: <10 hex>, Model: <name>,
    Lora hashes: "NAME: <12 hex>"                 (one line, wrapped here)

The layout follows A1111's `processing.create_infotext`: `key: value` pairs joined by ", ", a value quoted as
JSON when it holds ",", ":" or a newline (`infotext_utils.quote`). The LoRA is named in the prompt as A1111's
Lora extension expects it typed (`<lora:NAME:WEIGHT>`, WEIGHT multiplying the file's own alpha/rank, i.e.
kolora's `lora_strength`), and `Lora hashes` lists NAME with the short hash A1111 computes for that file,
which is how Civitai links an image to its LoRA. NAME and hash are those of `lora_kohya.safetensors`, the file
A1111 loads (`kolora_core.lora.export.a1111_identity`). Model hash is A1111's checkpoint short hash (first 10
hex digits of the file's sha256) of the Kolors UNet file. Both of kolora's engines sample with diffsynth's
`EnhancedDDIMScheduler`: A1111's "DDIM".
"""

from __future__ import annotations

import json
from typing import Protocol

SAMPLER = "DDIM"


class Generated(Protocol):
    """What the text needs of an image's record (`kolora_core.inference.story.Generation` has it all)."""

    prompt: str
    negative_prompt: str
    seed: int
    cfg_scale: float
    steps: int
    width: int
    height: int
    lora_strength: float
    base_model: str
    unet_sha256: str
    lora_a1111_name: str
    lora_a1111_hash: str


def quote(value: object) -> str:
    """A1111's `infotext_utils.quote`: JSON-quote a value that would break the `k: v, k: v` line."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def lora_tag(name: str, weight: float) -> str:
    return f"<lora:{name}:{weight:g}>"


def parameters_text(record: Generated) -> str:
    """The `parameters` chunk text of one image; the LoRA appears only when its kohya export was there to name it."""
    lora = bool(record.lora_a1111_name)
    prompt = f"{record.prompt} {lora_tag(record.lora_a1111_name, record.lora_strength)}" if lora else record.prompt
    fields: dict[str, object] = {
        "Steps": record.steps,
        "Sampler": SAMPLER,
        "CFG scale": record.cfg_scale,
        "Seed": record.seed,
        "Size": f"{record.width}x{record.height}",
        "Model hash": record.unet_sha256[:10],
        "Model": record.base_model,
    }
    if lora:
        # A1111's Lora extension drops ":" and "," from the name here (networks' remove_symbols).
        name = record.lora_a1111_name.replace(":", "").replace(",", "")
        fields["Lora hashes"] = f"{name}: {record.lora_a1111_hash}"
    negative = f"\nNegative prompt: {record.negative_prompt}" if record.negative_prompt else ""
    return f"{prompt}{negative}\n" + ", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v != "")
