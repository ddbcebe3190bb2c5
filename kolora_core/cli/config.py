"""`kolora config`: print the resolved run config, so users see what a profile and flags add up to."""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core.config import available_profiles, dump_config, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the resolved run config as YAML")
    parser.add_argument("--profile", default="full", choices=available_profiles())
    parser.add_argument("--config", type=Path, help="run config overlay (YAML, JSON or TOML)")
    parser.set_defaults(func=_config_command)


def _config_command(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.profile, args.config)), end="")
    return 0
