"""Resolving a run config: `defaults <- profile <- --config file <- command-line flags`, then validation.

Profiles are YAML overlays in `kolora_core/profiles/`; `--config` files are YAML, JSON or TOML; every leaf
field is also a `--section.field` flag (see `config_flags`, and `flags.py` for their help). All file reading
happens here, before validation: the config files, and
`generate.prompts_file`, whose prompts are inlined into `generate.prompts` so that every stage (and
every pod, which gets the dumped config) sees the same prompts and no path that only this machine has.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kolora_core.config.files import DuplicateKey, UniqueKeyLoader, read_text, unique_keys
from kolora_core.config.prompts_file import inline_prompts_error, read_prompts_file
from kolora_core.config.schema import RunConfig, error_text
from kolora_core.errors import KoloraError

PROFILES_DIR = Path(__file__).parents[1] / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def read_profile(name: str) -> dict[str, Any]:
    """A profile's overlay as written (only what it changes from the schema's defaults)."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        raise KoloraError(f"unknown profile '{name}': choose one of {', '.join(available_profiles())}")
    return read_config_file(path)


CONFIG_FORMATS = {".json": "JSON", ".toml": "TOML"}  # any other suffix is YAML (which JSON also is)


def read_config_file(path: Path, name: str | None = None) -> dict[str, Any]:
    """A run config in YAML, JSON or TOML (by suffix). TOML has no null: set a field to null in YAML or JSON.
    `name`: how errors call it (default "config file <path>")."""
    shown = name or f"config file {path}"
    kind = CONFIG_FORMATS.get(path.suffix.lower(), "YAML")
    text = read_text(path, "config file", "pass a YAML, JSON or TOML file to --config")
    return parse_config_text(text, kind, shown)


def parse_config_text(text: str, kind: str, shown: str) -> dict[str, Any]:
    """A run config's text in `kind` ("YAML", "JSON" or "TOML") as its mapping; errors call it `shown`."""
    try:
        if kind == "JSON":
            data = json.loads(text, object_pairs_hook=unique_keys)
        else:
            data = tomllib.loads(text) if kind == "TOML" else yaml.load(text, Loader=UniqueKeyLoader)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError, DuplicateKey) as exc:
        raise KoloraError(f"{shown} is not valid {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KoloraError(f"{shown} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error's location as the user writes it: `filter.ops[2]`, `generate.prompts[0].seed`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


class CombinationError(KoloraError):
    """A check across sections failed (RunConfig's own validators, e.g. the grid too small for the story): no one
    value is wrong, their combination is. Why a class of its own: a caller that loads one value without the rest
    of the user's config (the runner's single `-p` checks) must not blame that value."""


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    first = exc.errors()[0]
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    field = _field_path(first["loc"])
    if not field:  # a check across sections (RunConfig's validators): its text names the fields itself
        return f"{origin}: {error_text(first)}{more}"
    if prompts := inline_prompts_error(first):
        return f"{origin}: config field '{field}': {prompts}"
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown config key '{field}': check its spelling against `kolora config --profile <name>`"
    return f"{origin}: config field '{field}': {error_text(first)}{more}"


def dotted_to_nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """`{"train.steps": 4}` -> `{"train": {"steps": 4}}`."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_config(
    profile: str = "full",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    config_name: str | None = None,
    flags_name: str = "command-line flags",
) -> RunConfig:
    """Resolve a run config: defaults <- profile <- config file <- dotted overrides.

    `config_name` / `flags_name`: how errors name the config file and the overrides, for a caller that wrote what
    the user gave (`-p config`, `--config FILE`) to a file of its own: errors name that, not the temporary file."""
    data = read_profile(profile)
    origin = f"profile {profile}"
    if config_file is not None:
        origin = config_name or f"config file {config_file}"
        overlay = read_config_file(Path(config_file), config_name)
        _check_profile_key(overlay, profile, origin)
        _check_one_prompt_source(overlay, origin)
        data = _deep_merge(data, overlay)
    if overrides:
        nested = dotted_to_nested(overrides)
        _check_one_prompt_source(nested, flags_name)
        data = _deep_merge(data, nested)
        origin = flags_name if config_file is None else f"{config_name or config_file} + {flags_name}"
    data["profile"] = profile
    _inline_prompts_file(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        error = CombinationError if not exc.errors()[0]["loc"] else KoloraError
        raise error(_format_validation_error(exc, origin)) from None


def _check_profile_key(overlay: dict[str, Any], profile: str, origin: str) -> None:
    """Refuse a config file's `profile` that is not the chosen one: the loader sets `profile` from the chosen profile,
    so a different value would be dropped silently and the run use another profile than the file says. An equal one
    is accepted, so that `kolora config`'s output (which prints `profile:`) works as a --config file."""
    if "profile" not in overlay or overlay["profile"] == profile:
        return
    wanted = overlay["profile"] if overlay["profile"] in available_profiles() else "NAME"
    raise KoloraError(
        f"{origin} sets profile {overlay['profile']!r}, not the chosen {profile!r}: a file does not choose the profile; "
        f"pass --profile {wanted} (or -p profile={wanted}) and drop the key from the file"
    )


def _check_one_prompt_source(layer: dict[str, Any], origin: str) -> None:
    """Refuse `generate.prompts` and `generate.prompts_file` set side by side: the file's prompts would replace the
    inline ones without a word, and the run render a story the config does not show."""
    generate = layer.get("generate")
    if isinstance(generate, dict) and generate.get("prompts") is not None and generate.get("prompts_file"):
        raise KoloraError(
            f"{origin} sets both generate.prompts and generate.prompts_file: the file would replace the inline prompts; "
            "keep one (move the inline prompts into the file, or drop prompts_file)"
        )


def inline_prompts_file_text(text: str) -> str:
    """A run config's YAML text with its `generate.prompts_file` read now and inlined as `load_config` does.

    Why: the text travels (as the `config` parameter) to steps and pods that run in another working directory or on
    another machine, where a relative path, or any path, names nothing. The file is read relative to this process's
    working directory, where the user gave it. Text naming no prompts file (or not a YAML mapping, which the config's
    own check reports) is returned as it is."""
    try:
        data = parse_config_text(text, "YAML", "the run config")
    except KoloraError:
        return text
    generate = data.get("generate")
    if not isinstance(generate, dict) or not generate.get("prompts_file"):
        return text
    _check_one_prompt_source(data, "the run config")
    _inline_prompts_file(data)
    data["generate"]["prompts"] = [p.model_dump(mode="json", exclude_none=True) for p in data["generate"]["prompts"]]
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _inline_prompts_file(data: dict[str, Any]) -> None:
    """Replace `generate.prompts_file` by the prompts it holds and record where they came from (`prompts_from`)."""
    generate = data.get("generate")
    if not isinstance(generate, dict) or not generate.get("prompts_file"):
        return
    generate = dict(generate)
    path = generate.pop("prompts_file")
    if not isinstance(path, str):  # Path(5) would be a TypeError traceback
        raise KoloraError(f"config field 'generate.prompts_file': give the path of a YAML or JSONL file (got {path!r})")
    generate["prompts"] = read_prompts_file(Path(path))
    generate["prompts_from"] = str(path)
    data["generate"] = generate


def config_flags(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, str]:
    """Every leaf field as a dotted flag name -> help text, for generating CLI flags."""
    flags: dict[str, str] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            flags.update(config_flags(annotation, prefix=f"{dotted}."))
        elif dotted != "profile":
            flags[dotted] = field.description or ""
    return flags


def flag_overrides(values: Mapping[str, str | None]) -> dict[str, Any]:
    """`--section.field VALUE` flags as dotted overrides for `load_config`: each value is YAML.

    An empty (or absent) value keeps the profile's: Argo parameters cannot be unset, so a workflow passes
    '' for "not given". Shared by the stage shell and `kolora run`, which checks `-p` values before any step.
    """
    overrides: dict[str, Any] = {}
    for dotted, raw in values.items():
        if raw in (None, ""):
            continue
        try:
            overrides[dotted] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise KoloraError(f"flag --{dotted}: '{raw}' is not a valid YAML value") from None
    return overrides


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
