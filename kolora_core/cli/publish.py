"""`kolora publish`: promote a release directory into `<prefix>/<name>/<version>/` + `<prefix>/<name>/latest.json`,
or move latest.json back to another published version (`--rollback`).

The publish stage only assembles the release (no stage reads or writes the store); this command uploads it
with `kolora_core.release.promote`: release.json after every other file, latest.json last, and a version
that is already published is never written again (the same LoRA is a no-op, another one is refused).
It is the `promote` step of the Argo workflow, which the local runner (`kolora run`) runs like any step.

`--rollback VERSION --name NAME` points latest.json at a version published earlier, once every file of it
matches its release.json, by one compare-and-swap from the latest.json it read (a promotion that moved it
meanwhile wins; the rollback writes nothing). Nothing is deleted. The way out of a damaged champion, with
`kolora champion --reset` (no champion at all) where no intact version is left.

The store: `--s3-endpoint URL` (a cluster's, '' = AWS S3) or `--runs-dir DIR`, the embedded store of
`kolora run --runs-dir DIR` (started for this command; not while a run is using it).

Examples:
    kolora publish --release runs/latest/publish/release --runs-dir runs
    kolora publish --run-release kolora-run-x7k2p/release --s3-endpoint https://s3.example --bucket kolora
    kolora publish --rollback lora-4d03947d370e --name kolora --s3-endpoint https://s3.example --bucket kolora

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core.cli.release_store_params import check_prefix
from kolora_core.cli.store_args import add_release_store_arguments, check_bucket_flag, open_store, store_flags
from kolora_core.config import load_config
from kolora_core.errors import KoloraError
from kolora_core.release.pointer import rollback
from kolora_core.release.promote import promote, promote_key
from kolora_core.release.recovery import reset_command
from kolora_core.storage.objects import S3StoreStorage


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="upload a release to <prefix>/<name>/<version>/ and latest.json (never overwriting a version), or --rollback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", type=Path, metavar="DIR", help="local release directory (the publish stage's output)")
    source.add_argument(
        "--run-release", metavar="KEY", help="key of a release directory in the same bucket, e.g. <workflow name>/release"
    )
    source.add_argument(
        "--rollback", metavar="VERSION", help="point latest.json at this published version (checked whole first) instead"
    )
    parser.add_argument("--name", help="with --rollback: the model whose latest.json moves (e.g. kolora)")
    add_release_store_arguments(parser)
    parser.set_defaults(func=_publish_command)


def _checked(args: argparse.Namespace) -> str | None:
    """The mistakes in the arguments, found before the store is contacted (they are the ones to fix first);
    returns the model name of a rollback."""
    check_prefix(args.prefix, f"--prefix {args.prefix!r}")
    check_bucket_flag(args)
    if args.release is not None and not args.release.is_dir():
        raise KoloraError(f"--release {args.release} is not a directory: pass the publish stage's release folder")
    if args.rollback is None:
        if args.name is not None:
            raise KoloraError("--name is for --rollback: a release names its model in its release.json")
        return None
    if not args.name:
        raise KoloraError("--rollback needs --name: the model whose latest.json moves")
    return load_config(overrides={"name": args.name}, flags_name="--name").name


def _publish_command(args: argparse.Namespace) -> int:
    name = _checked(args)
    with open_store(args, create=False) as store:
        if name is not None:
            reset = reset_command(args.prefix, name, store_flags(args))
            line = rollback(S3StoreStorage(store), args.prefix, name, args.rollback, reset)
        elif args.release is not None:
            line = promote(store, args.release, args.prefix)
        else:
            line = promote_key(store, args.run_release, args.prefix)
    print(f"kolora publish: {line}")
    return 0
