"""Workflow parameters that feed stage config flags, checked against the config before any step starts (issue 13).

A rendered stage passes parameters as `--<section>.<field> '{{workflow.parameters.<name>}}'`; without this
check `kolora run -p steps=abc` would start a run that fails minutes later inside a stage (exit 2, not
retried, but late). Here every such value is validated the way the stage will validate it: with the profile
the same container receives (`--profile`), by `kolora_core.config`, so the two cannot disagree. The parameter
that feeds the run config artifact (`-p config`) is checked for the one mistake its loader cannot name: a path.
The generate shards are checked last, against the whole config the generate step resolves (`check_generate_shards`).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from kolora_core.config import (
    CombinationError,
    RunConfig,
    config_flags,
    dump_config,
    flag_overrides,
    inline_prompts_file_text,
    load_config,
)
from kolora_core.errors import KoloraError
from kolora_core.runner.refusal import ValueAdvice
from kolora_core.runner.spec import TemplateSpec, WorkflowSpec
from kolora_core.stages import stage_of

_PARAMETER = re.compile(r"^\{\{\s*workflow\.parameters\.([\w.-]+)\s*\}\}$")
DEFAULT_PROFILE = "full"  # the stage CLI's own default (kolora_core.stage_cli)
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
SHARDS_FLAG, PROMPTS_FLAG = "generate.shards", "generate.prompts"


def parameter_flags(template: TemplateSpec, parameters: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(the profile the container is given, {dotted config flag: the workflow parameter that feeds it})."""
    assert template.container is not None
    fields = set(config_flags())
    argv = (*template.container.command, *template.container.args)
    profile = _resolved(_after(argv, "--profile"), parameters) or DEFAULT_PROFILE
    flags = {}
    for flag, value in itertools.pairwise(argv):
        match = _PARAMETER.match(value)
        if flag.startswith("--") and flag[2:] in fields and match and match.group(1) in parameters:
            flags[flag[2:]] = match.group(1)
    return profile, flags


def _config_input(template: TemplateSpec) -> str | None:
    """The raw data of the input artifact the stage reads its run config from (`--config <path>`), if any."""
    assert template.container is not None
    config_path = _after((*template.container.command, *template.container.args), "--config")
    return next((a.raw_data for a in template.input_artifacts if a.path == config_path and a.raw_data is not None), None)


def _feeding_parameter(value: str | None) -> str | None:
    match = _PARAMETER.match(value or "")
    return match.group(1) if match else None


def refuse_config_path(name: str, value: str, instead: str = '-p {name}="$(cat {path})"') -> None:
    """Raise a one-line `KoloraError` when the run-config parameter `name` holds a path where the config's text belongs.

    Why: `-p config=c.yaml` reads as the YAML string 'c.yaml', which the loader refuses as "not a mapping" under the
    name of the file the text was written to; only a value no config could be (a one-line string) is refused here,
    where the parameter is known. `instead`: what to pass instead, formatted with `name` and the (quoted) `path`.
    """
    text = value.strip()
    if not text or "\n" in text:
        return
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    if not isinstance(data, str) or not (Path(data).is_file() or "/" in data or data.lower().endswith(CONFIG_SUFFIXES)):
        return
    hint = instead.format(name=name, path=shlex.quote(data))
    raise ValueAdvice(f"-p {name} holds the run config's text, not a path ('{data}')", hint, ": ")


def portable_config_parameters(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> dict[str, str]:
    """`parameters` with each run-config parameter's `generate.prompts_file` read here and its prompts inlined.

    Why: steps run in a scratch directory (a pod: on another machine), where the path the user gave from their
    working directory names nothing; read now, a missing or bad prompts file is one line before any step runs."""
    portable = dict(parameters)
    for template in workflow.templates.values():
        name = _feeding_parameter(_config_input(template)) if template.container is not None else None
        if name in portable:
            portable[name] = inline_prompts_file_text(portable[name])
    return portable


def template_config(template: TemplateSpec, parameters: Mapping[str, str]) -> RunConfig:
    """The config the template's stage will resolve: its profile, the run config it gets as a raw artifact
    (`--config <path>` of an input whose data is a workflow parameter) and the parameter-fed flags."""
    profile, flags = parameter_flags(template, parameters)
    raw = _config_input(template)
    overlay = _resolved(raw, parameters) if raw is not None else None
    overrides = flag_overrides({dotted: parameters[name] for dotted, name in flags.items()})
    if not overlay or not overlay.strip():
        return load_config(profile, None, overrides)
    with tempfile.TemporaryDirectory(prefix="kolora-config-") as tmp:
        path = Path(tmp) / "run.yaml"  # the name the stage reads it under
        path.write_text(overlay, encoding="utf-8")
        return load_config(profile, path, overrides, config_name=_config_given(template, raw), flags_name="-p parameters")


def _config_given(template: TemplateSpec, raw: str | None) -> str:
    """How the user gave the run config a template reads: `-p <its parameter>`, or the template's own data."""
    name = _feeding_parameter(raw)
    return f"-p {name}" if name else f"the run config of template {template.name}"


def config_digests(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> dict[str, str]:
    """sha256 of the config each template resolves (`template_config`), for the templates of kolora stages and of
    steps that read the run config: what `kolora run --retry` compares with the run's record.

    Why: a retry keeps the outputs of the steps that succeeded with these configs; a profile or a default edited
    since would give the steps it reruns other settings than the kept ones had (train would refuse its checkpoint)."""
    digests: dict[str, str] = {}
    for template in workflow.templates.values():
        if template.container is None:
            continue
        if stage_of((*template.container.command, *template.container.args)) is None and _config_input(template) is None:
            continue
        text = dump_config(template_config(template, parameters))
        digests[template.name] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def check_config_parameters(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> None:
    """Raise a one-line `KoloraError` naming the parameter and the field when a value would fail a stage's config."""
    # profile -> {dotted flag: parameter name}: one config check per profile the containers are given
    wanted: dict[str, dict[str, str]] = {}
    overlaid = False  # a run config from a parameter: the -p values alone are not the whole config
    for template in workflow.templates.values():
        if template.container is not None:
            profile, flags = parameter_flags(template, parameters)
            wanted.setdefault(profile, {}).update(flags)
            config_parameter = _feeding_parameter(_config_input(template))
            if config_parameter in parameters:
                refuse_config_path(config_parameter, parameters[config_parameter])
                overlaid |= parameters[config_parameter].strip() not in ("", "{}")
    for profile, flags in wanted.items():
        for dotted, name in flags.items():
            _check(profile, {dotted: parameters[name]}, f"-p {name}={parameters[name]!r} (--{dotted})", alone=True)
        together = {dotted: parameters[name] for dotted, name in flags.items()}
        _check(profile, together, "the -p values together", alone=overlaid)


def check_generate_shards(workflow: WorkflowSpec, parameters: Mapping[str, str], config_name: str | None = None) -> None:
    """Raise a one-line `KoloraError` when the parameter feeding `--generate.shards` asks for more shards than the story
    the step resolves has prompts. `parameters`: resolved, the run config's prompts file inlined; `config_name`: how
    the user gave the run config when not as its parameter (`--config FILE`).

    Why: story prompt i goes to shard i % shards, so a shard beyond the story renders nothing, yet it is a GPU pod
    that downloads the models (input artifacts, GBs, before its container starts). Why here and not in `RunConfig`:
    `check_config_parameters` loads each value with the profile alone, so a count that is right for `-p prompts` or
    `-p config` would be refused against the profile's story; the config `template_config` resolves has them all."""
    for template in workflow.templates.values():
        if template.container is None:
            continue
        profile, flags = parameter_flags(template, parameters)
        name = flags.get(SHARDS_FLAG)
        if name is None:
            continue
        generate = template_config(template, parameters).generate
        shards, prompts = generate.shards, len(generate.prompts)
        if shards > prompts:
            where = _prompts_origin(template, parameters, flags, config_name) or f"profile {profile}"
            raise ValueAdvice(
                f"-p {name}={parameters[name]}: the story has {prompts} prompt{'s' * (prompts != 1)} ({where}), so "
                f"{shards - prompts} of the {shards} shards would render nothing (each a GPU pod that downloads the "
                "models first)",
                f"-p {name}={prompts} or fewer",
            )


def _prompts_origin(
    template: TemplateSpec, parameters: Mapping[str, str], flags: Mapping[str, str], config_name: str | None
) -> str | None:
    """Where the user gave the story: `-p prompts`, the run config (the prompts file it named), or None (the profile).
    The order is the loader's: flags over the config over the profile."""
    name = flags.get(PROMPTS_FLAG)
    if name is not None and parameters[name] != "":  # '' keeps the config's prompts (`flag_overrides`)
        return f"-p {name}"
    raw = _config_input(template)
    overlay = yaml.safe_load(_resolved(raw, parameters) or "") if raw is not None else None  # it loaded: valid YAML
    generate = overlay.get("generate") if isinstance(overlay, dict) else None
    if not isinstance(generate, dict) or generate.get("prompts") is None:
        return None
    given = config_name or _config_given(template, raw)
    return f"{generate['prompts_from']}, the generate.prompts_file of {given}" if generate.get("prompts_from") else given


def _check(profile: str, flags: dict[str, str], what: str, *, alone: bool) -> None:
    """`alone`: `flags` are not all of the user's config, so a check across sections (`CombinationError`: ten
    `-p prompts` for the profile's 2x4 grid, where `-p config` sets `evaluate.grid_rows: 5`) is not theirs to fail;
    the whole config is checked with them later (`config_digests`, `template_config`)."""
    try:
        load_config(profile, None, flag_overrides(flags))
    except KoloraError as exc:
        if alone and isinstance(exc, CombinationError):
            return
        raise KoloraError(f"{what} is refused before any step runs: {str(exc).removeprefix('command-line flags: ')}") from None


def _after(argv: tuple[str, ...], flag: str) -> str | None:
    return next((value for arg, value in itertools.pairwise(argv) if arg == flag), None)


def _resolved(value: str | None, parameters: Mapping[str, str]) -> str | None:
    """A literal, or the value of a workflow parameter; None for anything the runner resolves later."""
    if value is None:
        return None
    match = _PARAMETER.match(value)
    if match:
        return parameters.get(match.group(1))
    return None if "{{" in value else value
