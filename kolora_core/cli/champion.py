"""`kolora champion`: fetch the promoted release of a model (its `latest.json`) for comparison, as a committed output.

The workflow's `champion` step runs it before evaluate and check-changes read the directory; no champion
yet (the first run of a model) writes `champion.json` = {"status": "none"} and is not an error. The model
name is `--name`, or, when that is '' (a workflow parameter left empty), the name the run config gives.

Example:
    kolora champion --s3-endpoint http://minio:9000 --bucket kolora --prefix models --name kolora --out champion/

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core import commit
from kolora_core.cli.publish import add_release_store_arguments, release_store
from kolora_core.config import load_config
from kolora_core.evaluation.champion import FOUND
from kolora_core.release.champion import fetch_champion
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
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (committed with _SUCCESS)")
    parser.set_defaults(func=_champion_command)


def _champion_command(args: argparse.Namespace) -> int:
    name = load_config(args.profile, args.config, {"name": args.name} if args.name else None).name  # validated
    staging = commit.begin(args.out, "champion")  # committed like a stage output: staged beside it, _SUCCESS last
    pointer = fetch_champion(S3StoreStorage(release_store(args)), args.prefix, name, staging)
    commit.commit(args.out, staging, {"stage": "champion"})
    if pointer["status"] == FOUND:
        print(f"kolora champion: {pointer['name']} {pointer['version']} from s3://{args.bucket}/{pointer['prefix']}")
    else:
        print(f"kolora champion: {pointer['reason']}")
    return 0
