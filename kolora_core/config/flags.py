"""The run config as command-line flags that explain themselves: one `--section.field` flag per leaf field.

Each flag's help is generated from the schema: the field's description, its type or choices as the metavar
(`{16-mixed,bf16-mixed,32-true,32}`, `INT|null`), the default, and every profile that changes it
(`default: 500; smoke: 4`). A stage lists its own sections in full and the others in one line each
(`--help-all` shows every field); an unknown flag is one line naming the closest known one.

Why argparse and not a generator such as pydantic-settings' CLI or jsonargparse (both installed, via
Data-Juicer): the flags are a contract with Argo and `kolora run`, whose workflows pass every parameter as a
string and '' for "not set": values are YAML and '' keeps the profile's value, and the layering is
defaults <- profile <- --config file <- flags. pydantic-settings parses JSON, treats '' as a value and shows
the schema's defaults, not a profile's; jsonargparse has its own config-file layering. What kolora needs on top
of argparse is this module.
"""

from __future__ import annotations

import argparse
import textwrap
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kolora_core.config.loader import available_profiles, read_profile
from kolora_core.config.schema import RunConfig
from kolora_core.errors import closest

RUN_SECTION = "run"  # the top-level fields (name, device)
LONG_DEFAULT = 48  # a default longer than this as YAML is summarised ("8 items"); `kolora config` prints it whole


@dataclass(frozen=True)
class ConfigFlag:
    dotted: str  # "train.steps"
    section: str  # "train", or RUN_SECTION for top-level fields
    metavar: str
    help: str


def _metavar(annotation: Any) -> str:
    """A field's type as the flag shows it: choices in braces, otherwise INT / FLOAT / TEXT / YAML-LIST ..."""
    if get_origin(annotation) is Literal:
        return "{" + ",".join(str(a) for a in get_args(annotation)) + "}"
    if get_origin(annotation) in (Union, types.UnionType):
        parts = [_metavar(a) for a in get_args(annotation) if a is not type(None)]
        choices = [p[1:-1] for p in parts if p.startswith("{")]
        plain = [p for p in parts if not p.startswith("{")]
        shown = ["{" + ",".join(choices) + "}"] if choices else []
        return "|".join(shown + plain + (["null"] if type(None) in get_args(annotation) else []))
    if annotation is bool:
        return "{true,false}"
    if get_origin(annotation) is list:
        return "YAML-LIST"
    if get_origin(annotation) is dict:
        return "YAML-MAP"
    return {int: "INT", float: "FLOAT", str: "TEXT"}.get(annotation, "VALUE")


def _shown(value: Any) -> str:
    """A default as YAML in one line (what the flag would take); long lists as their length."""
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16).strip()
    text = text.removesuffix("...").strip()
    if isinstance(value, list) and len(text) > LONG_DEFAULT:
        return f"{len(value)} items"
    return text or "''"


def _default(field: FieldInfo) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def profile_values() -> dict[str, dict[str, Any]]:
    """Profile name -> the dotted fields its overlay sets (only what differs from the schema's defaults)."""
    return {name: _leaves(read_profile(name)) for name in available_profiles()}


def config_flag_help(model: type[BaseModel] = RunConfig) -> list[ConfigFlag]:
    """Every leaf field of the run config, in schema order, with generated help."""
    profiles = profile_values()
    flags: list[ConfigFlag] = []

    def walk(model: type[BaseModel], prefix: str, section: str) -> None:
        for name, field in model.model_fields.items():
            dotted = f"{prefix}{name}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{dotted}.", name)
                continue
            if dotted == "profile":
                continue
            defaults = [f"default: {_shown(_default(field))}"]
            defaults += [f"{p}: {_shown(v[dotted])}" for p, v in profiles.items() if dotted in v]
            text = f"{field.description or ''} ({'; '.join(defaults)})".strip()
            flags.append(ConfigFlag(dotted, section, _metavar(annotation), text.replace("%", "%%")))

    walk(model, "", RUN_SECTION)
    return flags


def section_titles(model: type[BaseModel] = RunConfig) -> dict[str, str]:
    """Section -> the first line of its docstring, the group title in --help."""
    titles = {RUN_SECTION: "the run as a whole: its name and where it computes"}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            titles[name] = (annotation.__doc__ or "").strip().splitlines()[0]
    return titles


def add_config_flags(parser: argparse.ArgumentParser, own: Iterable[str], full: bool) -> None:
    """One `--section.field` flag per field (dest `cfg:<dotted>`): `own` sections (and the run's) described first,
    the other sections described too with `full`, else accepted silently and summarised in the epilog."""
    flags = config_flag_help()
    titles = section_titles()
    first = [*own, RUN_SECTION]
    order = first + [s for s in titles if s not in first]
    brief: list[str] = []
    for section in order:
        members = [f for f in flags if f.section == section]
        described = full or section in first
        group = parser.add_argument_group(section, titles[section]) if described else parser
        for flag in members:
            group.add_argument(
                f"--{flag.dotted}",
                dest=f"cfg:{flag.dotted}",
                metavar=flag.metavar,
                help=flag.help if described else argparse.SUPPRESS,
            )
        if not described:
            names = " ".join(f.dotted.removeprefix(f"{section}.") for f in members)
            brief.append(textwrap.fill(f"{section}: {names}", width=100, initial_indent="  ", subsequent_indent="      "))
    notes = ["values are YAML; '' keeps the profile's value. Resolution: defaults <- --profile <- --config <- flags."]
    if brief:
        notes += ["", "other sections (every stage accepts every flag; --help-all describes them):", *brief]
    parser.epilog = "\n".join(notes)


class FlagParser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2), naming the closest flag for an unknown one.

    Abbreviations are off: `--train.ste` must not silently mean `--train.steps` (whatever `allow_abbrev` a caller
    passes: the subcommands of `kolora` are made by argparse from their own keyword arguments).
    """

    def __init__(self, *args: Any, error_prefix: str, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = [t.split("=", 1)[0] for t in message.split(":", 1)[1].split() if t.startswith("--")]
            if unknown:
                message = "; ".join(self._unknown(flag) for flag in unknown)
        self.exit(2, f"{self.error_prefix}: error: {message} (--help lists the flags)\n")

    def _unknown(self, flag: str) -> str:
        known = [o for o in self._option_string_actions if o.startswith("--")]
        close = closest(flag, known)
        return f"unknown flag {flag}" + (f": did you mean {close}?" if close else "")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; wraps flag help as usual."""


def help_all_action(build: Callable[[], argparse.ArgumentParser]) -> type[argparse.Action]:
    """An action printing the help of `build()` (the parser with every section described), then exiting 0."""

    class HelpAll(argparse.Action):
        def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
            super().__init__(option_strings, dest, nargs=0, help="describe every config section's flags, then exit")

        def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
            build().print_help()
            parser.exit(0)

    return HelpAll
