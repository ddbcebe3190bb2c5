"""Which store a kolora command talks to: `--s3-endpoint URL`, or `kolora run`'s embedded store under `--runs-dir`.

Why one module: `kolora upload`, `kolora publish` and `kolora champion` must reach the store `kolora run` uses from
the same flags, started the same way (`EmbeddedS3` on `<runs-dir>/.store`, as the runner starts it): a release a
local run published into runs/.store is the one `kolora publish --rollback ... --runs-dir runs` moves back.
The embedded store serves one command at a time (its lock), so these commands wait for no run: while a
`kolora run` holds the store they fail with one line saying so.

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.release.promote import DEFAULT_PREFIX
from kolora_core.storage.address import DEFAULT_RUNS_DIR, embedded_flags, endpoint_flags, hinted_flags
from kolora_core.storage.bucket_names import GCS_ENDPOINT, check_bucket_name
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import DEFAULT_BUCKET, UNREACHABLE_FIX, S3Settings, S3Store, open_at_command_line


def add_store_arguments(parser: argparse.ArgumentParser, *, embedded_default: bool, bucket_help: str) -> None:
    """--s3-endpoint or --runs-dir (one of them; with `embedded_default` neither = the embedded store of ./runs),
    --bucket and --region."""
    where = parser.add_mutually_exclusive_group(required=not embedded_default)
    default = f"; default: the embedded store of kolora run in {DEFAULT_RUNS_DIR}/{STORE_DIRNAME}" if embedded_default else ""
    where.add_argument("--s3-endpoint", metavar="URL", help=f"S3 API URL ('' = AWS S3 of --region){default}")
    where.add_argument(
        "--runs-dir",
        type=Path,
        metavar="DIR",
        help=f"kolora run's --runs-dir: its embedded store (<DIR>/{STORE_DIRNAME}), started for this command",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"{bucket_help} (default: {DEFAULT_BUCKET})")
    parser.add_argument("--region", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION or us-east-1)")


def check_bucket_flag(args: argparse.Namespace) -> None:
    """`--bucket` (where given) by the rule of the store `--s3-endpoint` names, else the embedded store's, before the
    command contacts anything (`kolora run`, `kolora upload`, `kolora publish`, `kolora champion`).

    Why: only the embedded store checked it, so a bad name on another store was refused by the server only when used
    (minutes into a run, or after an upload scanned its folder), and a GCS bucket's '_' would have to pass S3's rule."""
    if args.bucket is None:
        return
    gcs_fix = f"a GCS bucket takes GCS's rule with --s3-endpoint {GCS_ENDPOINT}"
    check_bucket_name(args.bucket, args.s3_endpoint, f"--bucket {args.bucket!r}", store_named(args.s3_endpoint), gcs_fix)


def store_named(endpoint: str | None) -> str:
    """The store a refusal names: --s3-endpoint's value, or the embedded store."""
    return "the embedded store" if endpoint is None else f"--s3-endpoint {endpoint!r}"


def add_release_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Where releases live (`kolora publish`, `kolora champion`): a store named explicitly, and the key prefix."""
    add_store_arguments(parser, embedded_default=False, bucket_help="bucket of the releases")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix of releases (default: {DEFAULT_PREFIX})")


def runs_dir(args: argparse.Namespace) -> Path:
    return args.runs_dir if args.runs_dir is not None else DEFAULT_RUNS_DIR


def embedded(args: argparse.Namespace) -> bool:
    return args.s3_endpoint is None


def store_dir(args: argparse.Namespace) -> Path:
    """The embedded store's directory these arguments name."""
    return runs_dir(args) / STORE_DIRNAME


@contextlib.contextmanager
def open_store(
    args: argparse.Namespace, unreachable_fix: str = UNREACHABLE_FIX, *, at_command_line: bool = False, create: bool = True
) -> Iterator[S3Store]:
    """The store, its bucket created if missing; the embedded one runs for as long as the `with` block.

    `at_command_line`: a command only a person runs (`kolora upload`), where a store that fails on first contact is
    exit 2 even when transient (`open_at_command_line`); the workflow's steps (champion, publish) keep exit 75.
    `create=False` (the release commands): an embedded store that does not exist yet is refused, not made: releases
    are in the store `kolora run` made, and a mistyped --runs-dir would otherwise find "nothing" in a new empty one."""
    if embedded(args) and not create and not store_dir(args).is_dir():
        raise KoloraError(
            f"--runs-dir {runs_dir(args)}: no embedded store there ({store_dir(args)} does not exist): give the --runs-dir "
            "of the kolora run whose releases these are (nothing was created)"
        )
    server: contextlib.AbstractContextManager[S3Settings] = (
        EmbeddedS3(store_dir(args), args.bucket)
        if embedded(args)
        else contextlib.nullcontext(
            S3Settings.from_env(args.s3_endpoint, bucket=args.bucket, region=args.region, unreachable_fix=unreachable_fix)
        )
    )
    with server as settings:
        store = S3Store(settings)
        if at_command_line:
            open_at_command_line(store)
        else:
            store.ensure_bucket()
        yield store


def store_label(args: argparse.Namespace, store: S3Store) -> str:
    """Where the command wrote, in the words a user recognises."""
    return f"the embedded store ({store_dir(args)})" if embedded(args) else store.settings.label


def store_flags(args: argparse.Namespace) -> list[str]:
    """The flags that reach this store again from the user's shell, for advice (`kolora_core.storage.address`)."""
    hinted = hinted_flags()
    if hinted is not None:
        return hinted
    if embedded(args):
        return embedded_flags(runs_dir(args), args.bucket)
    return endpoint_flags(args.s3_endpoint, args.bucket, args.region)
