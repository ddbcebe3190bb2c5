"""`kolora config`: print the resolved run config, so users see what a profile and flags add up to.

It takes every `--section.field` flag a stage takes and resolves them as a stage does (`config_from_args`), so what
it prints is what the stage would run with, and usable as a `--config` file. With `-p NAME=VALUE` it takes the
workflow parameters instead, as `kolora run` and `kolora submit` do (`steps=100`, `config=...`), and resolves them as
`kolora submit` checks them (`submit.validate`): what every stage of that run will resolve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core.cli.parameter_flag import add_parameter_flag, take_profile
from kolora_core.cli.submit import parse_parameters, validate
from kolora_core.config import available_profiles, dump_config
from kolora_core.config.flags import add_config_flags
from kolora_core.errors import KoloraError
from kolora_core.stage_cli import config_from_args

DEFAULT_PROFILE = "full"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="print the resolved run config as YAML",
        usage="%(prog)s [--profile NAME] [--config FILE] [--SECTION.FIELD VALUE ... | -p NAME=VALUE ...]",
        description="Print the run config a stage would resolve from these flags: defaults <- --profile <- --config <- flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the flags' epilog keeps its line breaks
        allow_abbrev=False,  # as a stage: `--train.ste` must not silently mean `--train.steps`
    )
    parser.add_argument("--profile", choices=available_profiles(), help=f"config profile (default {DEFAULT_PROFILE})")
    parser.add_argument("--config", type=Path, help="run config overlay (YAML, JSON or TOML)")
    add_parameter_flag(
        parser, "a workflow parameter as `kolora run` / `kolora submit` take it (steps=100, prompts=...): what that run resolves"
    )
    add_config_flags(parser, own=(), full=True)
    parser.set_defaults(func=_config_command)


def _config_command(args: argparse.Namespace) -> int:
    if not args.parameter:
        args.profile = args.profile or DEFAULT_PROFILE
        print(dump_config(config_from_args(args)), end="")
        return 0
    flags = sorted(key.removeprefix("cfg:") for key, value in vars(args).items() if key.startswith("cfg:") and value is not None)
    if flags:
        raise KoloraError(f"give either -p parameters or --SECTION.FIELD flags, not both (--{flags[0]} with -p)")
    params = parse_parameters(args.parameter, args.config)
    take_profile(params, args.profile)
    params.setdefault("profile", DEFAULT_PROFILE)
    print(dump_config(validate(params, f"--config {args.config}" if args.config else None)), end="")
    return 0
