"""`kolora config`: print the resolved run config, so users see what a profile and flags add up to.

It takes every `--section.field` flag a stage takes and resolves them as a stage does (`config_from_args`), so what
it prints is what the stage would run with, and usable as a `--config` file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core.config import available_profiles, dump_config
from kolora_core.config.flags import add_config_flags
from kolora_core.stage_cli import config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="print the resolved run config as YAML",
        usage="%(prog)s [--profile NAME] [--config FILE] [--SECTION.FIELD VALUE ...]",
        description="Print the run config a stage would resolve from these flags: defaults <- --profile <- --config <- flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the flags' epilog keeps its line breaks
        allow_abbrev=False,  # as a stage: `--train.ste` must not silently mean `--train.steps`
    )
    parser.add_argument("--profile", default="full", choices=available_profiles())
    parser.add_argument("--config", type=Path, help="run config overlay (YAML, JSON or TOML)")
    add_config_flags(parser, own=(), full=True)
    parser.set_defaults(func=_config_command)


def _config_command(args: argparse.Namespace) -> int:
    print(dump_config(config_from_args(args)), end="")
    return 0
