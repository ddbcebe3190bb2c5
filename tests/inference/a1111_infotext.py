"""A1111's reading of a PNG's `parameters` text, replayed from its rules (the webui is not a package).

Reimplemented (not copied) from AUTOMATIC1111/stable-diffusion-webui `modules/infotext_utils.py`
`parse_generation_parameters`: the last line holds the `key: value` pairs when `re_param` finds at least three
there; lines before it are the prompt until one starts with "Negative prompt:"; a JSON-quoted value is
unquoted; `WxH` values become `<key>-1`/`<key>-2`. The `<lora:NAME:WEIGHT>` tags are read as the Lora extension
reads them (`modules/extra_networks.py` `re_extra_net`), and `Lora hashes` as Civitai and the extension's
`"NAME: HASH, NAME: HASH"` form.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")


def parse_generation_parameters(text: str) -> dict[str, str]:
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, done_with_prompt = "", "", False
    for raw in lines:
        line = raw.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt, line = True, line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    result = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in RE_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        size = RE_IMAGESIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result


def lora_tags(prompt: str) -> list[tuple[str, float]]:
    """(name, weight) of each `<lora:NAME:WEIGHT>` (weight 1 when absent)."""
    tags = []
    for kind, args in RE_EXTRA_NET.findall(prompt):
        if kind == "lora":
            name, *rest = args.split(":")
            tags.append((name, float(rest[0]) if rest else 1.0))
    return tags


def lora_hashes(value: str) -> dict[str, str]:
    return dict(item.split(": ", 1) for item in value.split(", "))


def lora_file_hash(path: Path) -> str:
    """A1111's short hash of a safetensors LoRA: sha256 of the bytes past the 8-byte length and the header, 12 hex."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]
