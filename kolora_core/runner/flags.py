"""Workflow parameters that feed stage config flags, checked against the config before any step starts (issue 13).

A rendered stage passes parameters as `--<section>.<field> '{{workflow.parameters.<name>}}'`; without this
check `kolora run -p steps=abc` would start a run that fails minutes later inside a stage (exit 2, not
retried, but late). Here every such value is validated the way the stage will validate it: with the profile
the same container receives (`--profile`), by `kolora_core.config`, so the two cannot disagree.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

from kolora_core.config import config_flags, flag_overrides, load_config
from kolora_core.errors import KoloraError
from kolora_core.runner.spec import WorkflowSpec

_PARAMETER = re.compile(r"^\{\{\s*workflow\.parameters\.([\w.-]+)\s*\}\}$")
DEFAULT_PROFILE = "full"  # the stage CLI's own default (kolora_core.stage_cli)


def check_config_parameters(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> None:
    """Raise a one-line `KoloraError` naming the parameter and the field when a value would fail a stage's config."""
    fields = set(config_flags())
    # profile -> {dotted flag: parameter name}: one config check per profile the containers are given
    wanted: dict[str, dict[str, str]] = {}
    for template in workflow.templates.values():
        if template.container is None:
            continue
        argv = (*template.container.command, *template.container.args)
        profile = _resolved(_after(argv, "--profile"), parameters) or DEFAULT_PROFILE
        for flag, value in itertools.pairwise(argv):
            match = _PARAMETER.match(value)
            if flag.startswith("--") and flag[2:] in fields and match and match.group(1) in parameters:
                wanted.setdefault(profile, {})[flag[2:]] = match.group(1)
    for profile, flags in wanted.items():
        for dotted, name in flags.items():
            _check(profile, {dotted: parameters[name]}, f"-p {name}={parameters[name]!r} (--{dotted})")
        _check(profile, {dotted: parameters[name] for dotted, name in flags.items()}, "the -p values together")


def _check(profile: str, flags: dict[str, str], what: str) -> None:
    try:
        load_config(profile, None, flag_overrides(flags))
    except KoloraError as exc:
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
