"""`kolora champion`: fetch the promoted release of a model (its `latest.json`) for comparison, as a committed output;
or clear latest.json (`--reset`), so that the next run has no champion.

The workflow's `champion` step runs it before evaluate and check-changes read the directory; no champion
yet (the first run of a model) writes `champion.json` = {"status": "none"} and is not an error. The model
name is `--name`, or, when that is '' (a workflow parameter left empty), the name the run config gives.

A damaged champion (latest.json unreadable, its release.json missing, a file that does not match its sha256)
fails the step, naming the damaged object and the command that gets the next run going, with the store flags
of the shell it is typed in (`kolora_core.release.recovery`): it is never taken for "no champion".

`--reset` replaces latest.json by a cleared pointer (`kolora_core.release.pointer`), by one compare-and-swap
from the latest.json it read: a promotion that moved it meanwhile wins and nothing is written. No published
version is deleted; `kolora publish --rollback` points latest.json at one of them again.

Examples:
    kolora champion --s3-endpoint http://minio:9000 --bucket kolora --prefix models --name kolora --out champion/
    kolora champion --reset --name kolora --runs-dir runs     # the embedded store of kolora run --runs-dir runs

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core import commit
from kolora_core.cli.release_store_params import check_prefix
from kolora_core.cli.store_args import add_release_store_arguments, check_bucket_flag, open_store, store_flags
from kolora_core.config import load_config
from kolora_core.errors import KoloraError
from kolora_core.evaluation.champion import FOUND
from kolora_core.release.champion import fetch_champion
from kolora_core.release.intact import DamagedRelease
from kolora_core.release.pointer import reset
from kolora_core.release.recovery import champion_advice
from kolora_core.storage.objects import S3StoreStorage


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "champion",
        help="fetch <prefix>/<name>/latest.json's release (no LoRA files) into a directory, or record that there is none",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_release_store_arguments(parser)
    parser.add_argument("--name", default="", help="model name; '' (default) = the `name` of --profile/--config")
    parser.add_argument("--profile", default="full", help="config profile the name comes from when --name is ''")
    parser.add_argument("--config", type=Path, metavar="FILE", help="run config file the name comes from when --name is ''")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, metavar="DIR", help="output directory (committed with _SUCCESS)")
    action.add_argument("--reset", action="store_true", help="clear latest.json instead: the next run has no champion")
    parser.set_defaults(func=_champion_command)


def _champion_command(args: argparse.Namespace) -> int:
    check_prefix(args.prefix, f"--prefix {args.prefix!r}")  # before the store: the mistakes to fix first
    check_bucket_flag(args)
    name = load_config(args.profile, args.config, {"name": args.name} if args.name else None, flags_name="--name").name
    with open_store(args, create=False) as store:
        storage = S3StoreStorage(store)
        if args.reset:
            print(f"kolora champion: {reset(storage, args.prefix, name)}")
            return 0
        staging = commit.begin(args.out, "champion")  # committed like a stage output: staged beside it, _SUCCESS last
        try:
            pointer = fetch_champion(storage, args.prefix, name, staging)
        except DamagedRelease as damaged:
            raise KoloraError(champion_advice(storage, args.prefix, name, damaged, store_flags(args))) from None
    commit.commit(args.out, staging, {"stage": "champion"})
    if pointer["status"] == FOUND:
        print(f"kolora champion: {pointer['name']} {pointer['version']} from s3://{args.bucket}/{pointer['prefix']}")
    else:
        print(f"kolora champion: {pointer['reason']}")
    return 0
