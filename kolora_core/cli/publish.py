"""`kolora publish`: promote a release directory into `<prefix>/<name>/<version>/` + `<prefix>/<name>/latest.json`.

The publish stage only assembles the release (no stage reads or writes the store); this command uploads it
with `kolora_core.release.promote`: release.json after every other file, latest.json last, and a version
that is already published is never written again (the same LoRA is a no-op, another one is refused).
It is the `promote` step of the Argo workflow, which the local runner (`kolora run`) runs like any step.

Examples:
    kolora publish --release runs/latest/publish/release --s3-endpoint http://localhost:9000 --bucket kolora
    kolora publish --run-release kolora-run-x7k2p/release --s3-endpoint https://s3.example --bucket kolora

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.release.promote import DEFAULT_PREFIX, promote, promote_key
from kolora_core.storage.s3 import DEFAULT_BUCKET, S3Settings, S3Store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="upload a release to <prefix>/<name>/<version>/ and latest.json, never overwriting a version",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--release", type=Path, metavar="DIR", help="local release directory (the publish stage's output)")
    source.add_argument(
        "--run-release", metavar="KEY", help="key of a release directory in the same bucket, e.g. <workflow name>/release"
    )
    add_release_store_arguments(parser)
    parser.set_defaults(func=_publish_command)


def add_release_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Where releases live: endpoint, bucket, region, key prefix (`kolora publish` and `kolora champion`)."""
    parser.add_argument("--s3-endpoint", required=True, metavar="URL", help="S3 API URL, e.g. http://minio:9000")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"bucket of the releases (default: {DEFAULT_BUCKET})")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix of releases (default: {DEFAULT_PREFIX})")
    parser.add_argument("--region", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION or us-east-1)")


def release_store(args: argparse.Namespace) -> S3Store:
    """The bucket those arguments name; credentials from the AWS_* environment only."""
    return S3Store(S3Settings.from_env(args.s3_endpoint, bucket=args.bucket, region=args.region))


def _publish_command(args: argparse.Namespace) -> int:
    """A local --release is checked before the store is contacted: its mistake is the one to fix first."""
    if args.release is not None and not args.release.is_dir():
        raise KoloraError(f"--release {args.release} is not a directory: pass the publish stage's release folder")
    store = release_store(args)
    store.ensure_bucket()
    if args.release is not None:
        print(f"kolora publish: {promote(store, args.release, args.prefix)}")
    else:
        print(f"kolora publish: {promote_key(store, args.run_release, args.prefix)}")
    return 0
