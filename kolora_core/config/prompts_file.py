"""Story prompts from a file: YAML or JSON (a list, or a mapping with a `prompts:` list) or JSONL (one object per line).

Each entry has the `StoryPrompt` fields: `prompt` (required), `negative_prompt`, `seed`, and optional
per-prompt `cfg_scale`, `steps`, `width`, `height` (or `size: 1024` / `size: 1024x768`) and
`lora_strength`; a missing or null setting takes the `generate` section's value. A bad entry is one
`KoloraError` line naming the file, the line and the field, e.g.
`prompts file story.yaml line 7 (prompt 3): field 'steps': Input should be greater than or equal to 1 (got 0)`
(JSON's parser knows no line of an entry, so a JSON file's errors name the prompt alone).
The loader (`loader.load_config`) reads the file and inlines its prompts; the schema itself does no file I/O.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kolora_core.config.files import DuplicateKey, UniqueKeyLoader, read_text, unique_keys
from kolora_core.config.schema import StoryPrompt, error_text
from kolora_core.errors import KoloraError

YAML_SUFFIXES = {".yaml", ".yml"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
JSON_SUFFIXES = {".json"}


UNKNOWN_FIELD = f"unknown field (allowed: {', '.join(StoryPrompt.model_fields)}, size)"
_MAPPING = "each prompt must be a mapping with at least 'prompt'"


def _field_error(exc: ValidationError) -> tuple[str | None, str]:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return field, UNKNOWN_FIELD
    return field, error_text(first)


def inline_prompts_error(error: ErrorDetails) -> str | None:
    """What an error in `generate.prompts` written inline (a config file, a flag, `-p prompts=`) says: the shape a
    story takes, in the YAML the user types, and the fields a prompt has; None for an error elsewhere or of a value.
    pydantic's own words ("Input should be a valid list", "a valid dictionary or instance of StoryPrompt") name a
    Python type, not what to write, and an unknown key was sent to `kolora config` to find the spelling."""
    loc, kind, got = error["loc"], error["type"], error.get("input")
    if tuple(loc[:2]) != ("generate", "prompts"):
        return None
    if len(loc) == 2 and kind == "list_type":
        shown = f" (got {got!r})" if isinstance(got, str) else ""
        example = "[{prompt: a cat, seed: 1}, {prompt: a dog, seed: 2}]"
        return f"must be a list of prompts, each a mapping with at least 'prompt', e.g. {example}{shown}"
    if len(loc) == 3 and kind == "model_type":
        example = got if isinstance(got, str) and got else "a cat"
        return f"{_MAPPING}, e.g. {{prompt: {example}, seed: 1}} (got {type(got).__name__} {got!r})"
    if len(loc) == 4 and kind == "extra_forbidden":
        return UNKNOWN_FIELD
    return None


def _validate(entry: Any, path: Path, index: int, line: int | None, key_lines: dict[str, int] | None = None) -> StoryPrompt:
    """One entry as a StoryPrompt; the error names the line of the bad key where YAML knows it (None: no line known)."""
    where = f"prompts file {path}{'' if line is None else f' line {line}'} (prompt {index})"
    if not isinstance(entry, dict):
        raise KoloraError(f"{where}: {_MAPPING}, got {type(entry).__name__}")
    try:
        return StoryPrompt.model_validate(entry)
    except ValidationError as exc:
        field, message = _field_error(exc)
        key = field.split(".")[0] if field else "size"  # StoryPrompt's one check of the whole entry: the size shorthand
        if key_lines and key in key_lines:
            where = f"prompts file {path} line {key_lines[key]} (prompt {index})"
        named = f"field '{field}': " if field else ""
        raise KoloraError(f"{where}: {named}{message}") from None


def _story_list(path: Path, data: Any) -> list[Any]:
    """The entries of a YAML or JSON file's root: a list, or a mapping whose one key is `prompts`."""
    if isinstance(data, dict) and set(data) == {"prompts"}:
        data = data["prompts"]
    if not isinstance(data, list) or not data:
        raise KoloraError(f"prompts file {path} must hold a non-empty list of prompts (or a mapping with a 'prompts:' list)")
    return data


def _json_entries(path: Path, text: str) -> list[Any]:
    """A JSON file's entries. Read by the JSON parser, not as YAML: PyYAML refuses JSON's tab indentation and reads
    1e3 as a string."""
    try:
        return _story_list(path, json.loads(text, object_pairs_hook=unique_keys))
    except json.JSONDecodeError as exc:
        raise KoloraError(f"prompts file {path} line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except DuplicateKey as exc:
        raise KoloraError(f"prompts file {path}: {exc}") from None


def _yaml_items(path: Path, text: str) -> list[tuple[Any, dict[str, int]]]:
    """Entries with the line of the entry ('' key) and of each of its keys, from YAML's node tree."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except (yaml.YAMLError, DuplicateKey) as exc:
        raise KoloraError(f"prompts file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    entries = _story_list(path, data)
    if isinstance(data, dict):
        root = next(v for k, v in root.value if k.value == "prompts")
    items = []
    for node, entry in zip(root.value, entries, strict=True):
        lines = {"": node.start_mark.line + 1}
        if isinstance(node, yaml.MappingNode):
            lines |= {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
        items.append((entry, lines))
    return items


def read_prompts_file(path: Path) -> list[StoryPrompt]:
    """Every prompt of a YAML, JSON or JSONL prompts file, validated; errors name file, line and field."""
    fix = "set generate.prompts_file to a YAML or JSONL file"
    if not path.is_absolute():  # written in a config file, it is still read from where the command runs
        fix += f" (a relative path is read from the working directory, {Path.cwd()})"
    text = read_text(path, "prompts file", fix)
    prompts: list[StoryPrompt] = []
    if path.suffix.lower() in JSONL_SUFFIXES:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as exc:
                raise KoloraError(f"prompts file {path} line {number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            except DuplicateKey as exc:
                raise KoloraError(f"prompts file {path} line {number}: {exc}") from None
            prompts.append(_validate(entry, path, len(prompts), number))
        if not prompts:
            raise KoloraError(f"prompts file {path} holds no prompts")
        return prompts
    if path.suffix.lower() in JSON_SUFFIXES:
        return [_validate(entry, path, index, None) for index, entry in enumerate(_json_entries(path, text))]
    if path.suffix.lower() not in YAML_SUFFIXES:
        raise KoloraError(f"prompts file {path}: unknown format '{path.suffix}'; use .yaml/.yml, .json or .jsonl")
    for index, (entry, lines) in enumerate(_yaml_items(path, text)):
        prompts.append(_validate(entry, path, index, lines[""], lines))
    return prompts
