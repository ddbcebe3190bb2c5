"""The `-p NAME=VALUE` flag of the commands that take workflow parameters (`kolora run`, `submit`, `config`)."""

from __future__ import annotations

import argparse

from kolora_core.errors import KoloraError


def add_parameter_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`-p/--parameter NAME=VALUE`, repeatable, into `args.parameter` (a list, empty when none is given)."""
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", help=help_text)


def take_profile(params: dict[str, str], profile: str | None) -> None:
    """`--profile NAME` as `-p profile=NAME` (when given); both given and different is one line."""
    if profile is None:
        return
    if params.get("profile", profile) != profile:
        raise KoloraError(f"--profile {profile} and -p profile={params['profile']} disagree; give one")
    params["profile"] = profile
