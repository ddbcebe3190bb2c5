"""The `-p NAME=VALUE` flag of the commands that take workflow parameters (`kolora run`, `submit`, `config`)."""

from __future__ import annotations

import argparse


def add_parameter_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`-p/--parameter NAME=VALUE`, repeatable, into `args.parameter` (a list, empty when none is given)."""
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", help=help_text)
