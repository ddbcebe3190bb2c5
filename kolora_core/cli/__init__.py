"""`kolora`: the developer CLI. One module per subcommand; this file only registers them.

Each subcommand module exposes `register(subparsers)` which adds its parser and sets
`func(args) -> int` as the handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kolora_core.errors import KoloraError

SUBCOMMANDS = ("run", "render", "submit", "upload", "config", "publish", "champion", "notify")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kolora", description="Kolors LoRA pipeline: run locally, render or submit to Argo")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"kolora_core.cli.{name}").register(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KoloraError as exc:
        print(f"kolora {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
