"""`kolora`: the developer CLI. One module per subcommand; this file only registers them.

Each subcommand module exposes `register(subparsers)` which adds its parser and sets
`func(args) -> int` as the handler.

Every parser here is a `FlagParser`, as a stage's is: a mistake on the command line is one line (exit 2) from the
subcommand it was typed to, an unknown flag naming the closest one (`kolora run: error: unknown flag --profil: did
you mean --profile?`), and no flag is taken for an abbreviation. argparse alone answered a mistyped flag of any
subcommand from the top-level parser: `kolora: error: unrecognized arguments: ...` below the usage of `kolora`.
Ctrl-C is one line too (exit 130), not the traceback of wherever the command was (a `kolora upload` hashing or
sending files): every command leaves what it did to be finished by running it again.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from kolora_core.config.flags import FlagParser
from kolora_core.errors import KoloraError, closest

SUBCOMMANDS = ("run", "render", "submit", "upload", "config", "publish", "champion", "notify")


class _SubcommandParser(FlagParser):
    """The parser argparse makes for a subcommand: its errors are prefixed with its own name (`kolora run`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.HelpFormatter)  # the subcommand's own choice, else argparse's
        super().__init__(error_prefix=kwargs["prog"], **kwargs)


def _refuse_flags_before_the_subcommand(parser: FlagParser, subcommands: dict[str, FlagParser], argv: list[str]) -> None:
    """A flag before the subcommand is one of `kolora`'s own (only --help): anything else is one line from `kolora`.

    argparse handed it to the subcommand's parser with the rest of what it did not know, so `kolora --foo render`
    said `kolora render: error: unknown flag --foo`, as if render had been given it; `kolora --rendr` said that a
    subcommand is required. Now the line says that the flag is not kolora's and what fits: the subcommand it
    belongs to (`--out` is render's: give it after `render`), else the subcommand it is closest to, else the list."""
    for position, token in enumerate(argv):
        if token in ("-h", "--help") or not token.startswith("-") or token == "--":
            return  # --help wins, as argparse has it; a subcommand (or an operand) ends kolora's own flags
        flag = token.split("=", 1)[0]
        command = next((t for t in argv[position:] if t in subcommands), None)
        close = closest(flag.lstrip("-"), SUBCOMMANDS)
        if command and flag in subcommands[command]._option_string_actions:
            hint = f"it is a flag of kolora {command}: give it after '{command}'"
        elif close:
            hint = f"did you mean the subcommand {close}?"
        else:
            hint = f"the subcommands are {', '.join(SUBCOMMANDS)}; their flags go after them"
        parser.error(f"{flag} is not a flag of kolora (only --help comes before the subcommand): {hint}")


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="kolora",
        description="Kolors LoRA pipeline: run locally, render or submit to Argo",
        error_prefix="kolora",
        formatter_class=argparse.HelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"kolora_core.cli.{name}").register(subparsers)
    argv = sys.argv[1:] if argv is None else argv
    _refuse_flags_before_the_subcommand(parser, subparsers.choices, argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # what the subcommand's parser left: answered by that parser, which knows its flags
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except KoloraError as exc:
        print(f"kolora {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # `kolora run` stops its step and says more; the others are one command, run again
        print(f"kolora {args.command}: interrupted; run it again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
