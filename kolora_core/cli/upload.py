"""`kolora upload`: your own images into the store under a key, whole or not at all, for `-p dataset-key=<key>`.

Examples:
    kolora upload ./my-style datasets/my-style          # the embedded store of `kolora run` (runs/.store)
    kolora run -p dataset-key=datasets/my-style -p caption=null
    kolora upload ./my-style datasets/my-style --s3-endpoint https://s3.example --bucket my-bucket   # a cluster's
    kolora upload ./my-style datasets/my-style --s3-endpoint '' --bucket my-bucket --region eu-west-1  # AWS S3

Why not only `aws s3 sync`: a run that starts while a sync is under way reads part of it, and nothing tells a file
rewritten since from the one the run should have read. This command marks the key `.uploading` first, sends the
files, deletes the files of the earlier upload of this key that the folder no longer has, writes `_SUCCESS` with every
file's size and sha256, and unmarks the key last; ingest then refuses (retried) an upload being written and one that
differs from its `_SUCCESS` (kolora_core/upload_marker.py). A cut-off upload is finished by running it again. A key
inside another upload or holding one below it is refused; one holding objects no kolora upload of it wrote (a sync)
is refused unless --replace, which deletes them. One writer per key at a time.
A folder synced by other tools is still read, as it is.

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kolora_core.cli.dataset_key import clean_dataset_key
from kolora_core.cli.store_args import add_store_arguments, embedded, open_store, store_dir, store_label
from kolora_core.data.suffixes import IMAGE_SUFFIXES, is_image_name, is_parquet_name
from kolora_core.errors import KoloraError, name_some
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.errors import ArtifactNotFound
from kolora_core.storage.s3 import OR_EMBEDDED, S3Store, size_text
from kolora_core.upload_marker import UPLOADING, UploadFile, listed_files, marker_text, scan_folder
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
    add_store_arguments(parser, embedded_default=True, bucket_help="the artifact repository's bucket")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="also delete objects under the key that no kolora upload of it wrote (e.g. files another tool synced there)",
    )
    parser.set_defaults(func=_upload_command)


def _check_readable(folder: Path, files: list[UploadFile]) -> None:
    """Refuse a folder in which ingest would find nothing to read, before anything is sent."""
    if not any(is_image_name(f.rel) or is_parquet_name(f.rel) for f in files):
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise KoloraError(f"{folder} holds no images ({kinds}) and no .parquet files: ingest would find nothing to train on")


def _marker_files(store: S3Store, key: str) -> dict[str, Any] | None:
    """The files the kolora marker at `key` lists, read as the ingest pod reads it; None without one."""
    try:
        text = store.get_with_etag(f"{key}/{COMPLETE_MARKER}")[0]
    except ArtifactNotFound:
        return None
    return listed_files(text, f"s3://{store.bucket}/{key}")


def _is_upload(store: S3Store, key: str) -> bool:
    """Whether `key` holds a kolora upload, or one being written."""
    return store.exists(f"{key}/{UPLOADING}") or _marker_files(store, key) is not None


def _earlier_upload(store: S3Store, key: str, prefix: str, files: list[UploadFile], replace: bool = False) -> list[str]:
    """The keys of the earlier kolora upload at `key` that this one no longer has, to delete once it is sent.

    Refused before anything is written: a key inside another upload or holding one below it (never deleted), and,
    unless `replace`, objects no kolora upload of this key wrote (files synced by other tools): this command
    deletes only what it is told to, and ingest would refuse an upload beside files its `_SUCCESS` does not list.
    After a cut-off upload (`.uploading` still there) everything under the key is that upload's.
    """
    parts = key.split("/")
    for outer in ("/".join(parts[:n]) for n in range(1, len(parts))):
        if _is_upload(store, outer):
            raise KoloraError(f"key {key} lies inside the upload s3://{store.bucket}/{outer}/: give a key beside it")
    existing = [k for k in store.list_keys(prefix) if not k.endswith("/")]  # folder markers of consoles: harmless
    nested = {k.rsplit("/", 1)[0] for k in existing if k.endswith((f"/{COMPLETE_MARKER}", f"/{UPLOADING}"))} - {key}
    inner = sorted(k for k in nested if _is_upload(store, k))
    if inner:
        raise KoloraError(f"key {key} holds the upload(s) {name_some(inner, 3)}: give a key beside them")
    new = {f.rel for f in files}
    if prefix + UPLOADING in existing or replace:
        return sorted(k for k in existing if k[len(prefix) :] not in new | {COMPLETE_MARKER, UPLOADING})
    earlier = set(_marker_files(store, key) or {}) if prefix + COMPLETE_MARKER in existing else set()
    foreign = [k for k in existing if k[len(prefix) :] not in new | earlier | {COMPLETE_MARKER}]
    if foreign:
        raise KoloraError(
            f"s3://{store.bucket}/{prefix} already holds {len(foreign)} object(s) no kolora upload of this key wrote "
            f"({name_some(foreign, 3)}): upload to another key, or pass --replace to delete them"
        )
    return sorted(prefix + rel for rel in earlier - new)


def _refuse_changed(f: UploadFile) -> None:
    if f.changed():
        raise KoloraError(f"{f.path} changed while it was being uploaded: run kolora upload again once it is settled")


def upload_folder(store: S3Store, key: str, files: list[UploadFile], replace: bool = False) -> int:
    """Send `files` under `key` in the marked order (module doc); returns how many objects it deleted (an earlier
    upload's, or with `replace` any). A file that changed while it was sent stops the upload (the key stays
    marked: run it again)."""
    prefix = f"{key}/"
    stale = _earlier_upload(store, key, prefix, files, replace)
    store.put_text(prefix + UPLOADING, "kolora upload in progress\n")
    for f in files:
        _refuse_changed(f)  # deleted or rewritten since the scan
        store.upload_file(f.path, prefix + f.rel)
        _refuse_changed(f)  # rewritten while it was sent
    store.delete_keys(stale)
    store.put_text(prefix + COMPLETE_MARKER, marker_text(key, files))
    store.delete_keys([prefix + UPLOADING])
    return len(stale)


def _refuse_store_inside(folder: Path, store_dir: Path) -> None:
    """The embedded store writes its data into its directory while serving the upload: never upload that."""
    folder, store_dir = folder.resolve(), store_dir.resolve()
    if store_dir == folder or folder in store_dir.parents or store_dir in folder.parents:
        raise KoloraError(f"{folder} holds (or lies in) the embedded store {store_dir}: upload the folder of your images")


def _upload_command(args: argparse.Namespace) -> int:
    key = clean_dataset_key(args.key, "key")
    if embedded(args):
        _refuse_store_inside(args.folder, store_dir(args))
    files = scan_folder(args.folder)
    _check_readable(args.folder, files)
    with open_store(args, unreachable_fix=OR_EMBEDDED, at_command_line=True) as store:
        removed = upload_folder(store, key, files, args.replace)
        where = store_label(args, store)
    size = size_text(sum(f.size for f in files))
    gone = f"; removed {removed} object(s) the folder no longer has" if removed else ""
    print(f"kolora upload: {len(files)} file(s), {size}, to s3://{args.bucket}/{key}/ on {where}{gone}")
    print(f"kolora upload: read it with -p {DATASET_KEY_PARAM}={key}")
    return 0
