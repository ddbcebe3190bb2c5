"""`kolora upload`: your own images into the store under a key, whole or not at all, for `-p dataset-key=<key>`.

Examples:
    kolora upload ./my-style datasets/my-style          # the embedded store of `kolora run` (runs/.store)
    kolora run -p dataset-key=datasets/my-style -p caption=null
    kolora upload ./my-style datasets/my-style --s3-endpoint https://s3.example --bucket my-bucket   # a cluster's
    kolora upload ./my-style datasets/my-style --s3-endpoint '' --bucket my-bucket --region eu-west-1  # AWS S3

Why not only `aws s3 sync`: a run that starts while a sync is under way reads part of it, and nothing tells a file
rewritten since from the one the run should have read. This command marks the key `.uploading` first, sends the
files, deletes objects an earlier upload left that the folder no longer has, writes `_SUCCESS` with every file's
size and sha256, and unmarks the key last; ingest then refuses an upload being written (retried) and one that
differs from its `_SUCCESS` (kolora_core/upload_marker.py). A cut-off upload is finished by running it again.
A folder synced by other tools is still read, as it is.

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from kolora_core.cli.dataset_key import clean_dataset_key
from kolora_core.data.suffixes import IMAGE_SUFFIXES, PARQUET_SUFFIX
from kolora_core.errors import KoloraError
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import DEFAULT_BUCKET, S3Settings, S3Store, size_text
from kolora_core.upload_marker import UPLOADING, UploadFile, marker_text, scan_folder
from workflows.options import DATASET_KEY_PARAM


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload a folder of your images under a key, marked complete last (for -p dataset-key)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", type=Path, help="the folder of images and captions (or of .parquet files)")
    parser.add_argument("key", help="key prefix in the bucket, e.g. datasets/my-style (what -p dataset-key names)")
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 API URL ('' = AWS S3 of --region); default: the embedded store of kolora run in <runs-dir>/.store",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help=f"the artifact repository's bucket (default: {DEFAULT_BUCKET})")
    parser.add_argument("--region", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION or us-east-1)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="kolora run's --runs-dir, for the embedded store")
    parser.set_defaults(func=_upload_command)


def _check_readable(folder: Path, files: list[UploadFile]) -> None:
    """Refuse a folder in which ingest would find nothing to read, before anything is sent."""
    if not any(Path(f.rel).suffix.lower() in (*IMAGE_SUFFIXES, PARQUET_SUFFIX) for f in files):
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise KoloraError(f"{folder} holds no images ({kinds}) and no .parquet files: ingest would find nothing to train on")


def upload_folder(store: S3Store, folder: Path, key: str, files: list[UploadFile]) -> int:
    """Send `files` under `key` in the marked order (module doc); returns how many stale objects were deleted."""
    prefix = f"{key}/"
    store.put_text(prefix + UPLOADING, "kolora upload in progress\n")
    for f in files:
        store.upload_file(f.path, prefix + f.rel)
    kept = {prefix + f.rel for f in files} | {prefix + UPLOADING}
    stale = [k for k in store.list_keys(prefix) if k not in kept]
    store.delete_keys(stale)
    store.put_text(prefix + COMPLETE_MARKER, marker_text(key, files))
    store.delete_keys([prefix + UPLOADING])
    return len(stale) - (prefix + COMPLETE_MARKER in stale)


def _upload_command(args: argparse.Namespace) -> int:
    key = clean_dataset_key(args.key, "key")
    files = scan_folder(args.folder)
    _check_readable(args.folder, files)
    embedded = args.s3_endpoint is None
    server = (
        EmbeddedS3(args.runs_dir / STORE_DIRNAME, args.bucket)
        if embedded
        else contextlib.nullcontext(S3Settings.from_env(args.s3_endpoint, bucket=args.bucket, region=args.region))
    )
    with server as settings:
        store = S3Store(settings)
        store.ensure_bucket()
        removed = upload_folder(store, args.folder, key, files)
    where = f"the embedded store ({args.runs_dir / STORE_DIRNAME})" if embedded else settings.label
    size = size_text(sum(f.size for f in files))
    gone = f"; removed {removed} object(s) of an earlier upload" if removed else ""
    print(f"kolora upload: {len(files)} file(s), {size}, to s3://{args.bucket}/{key}/ on {where}{gone}")
    print(f"kolora upload: read it with -p {DATASET_KEY_PARAM}={key}")
    return 0
