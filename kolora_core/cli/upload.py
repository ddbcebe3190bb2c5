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
differs from its `_SUCCESS` (kolora_core/upload_marker.py). Like a sync, it sends only what the key does not hold
yet: a file whose object has its size (listed) and its sha256 (stored with each object sent, x-amz-meta-sha256, and
looked up by HEAD) is already there; no object is read back. So running it again after adding files sends those,
a cut-off upload is finished by running it again (what it sent is kept), and a key that holds the folder as it is
is not written at all. An object another tool wrote over (its metadata gone) is sent again. A key
inside another upload or holding one below it is refused, and so is one holding published releases (release.json,
latest.json), --replace or not; one holding objects no kolora upload of it wrote (a sync) is refused unless
--replace, which deletes them. One writer per key at a time.
A folder synced by other tools is still read, as it is.

Credentials for --s3-endpoint: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION) from the environment only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolora_core.cli.dataset_key import clean_dataset_key
from kolora_core.cli.store_args import add_store_arguments, check_bucket_flag, embedded, open_store, store_dir, store_label
from kolora_core.data.suffixes import IMAGE_SUFFIXES, is_image_name, is_parquet_name
from kolora_core.errors import KoloraError, name_some
from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.pointer import LATEST
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.errors import ArtifactNotFound
from kolora_core.storage.s3 import OR_EMBEDDED, S3Store, size_text
from kolora_core.upload_marker import RESERVED, UPLOADING, UploadFile, listed_files, marker_text, scan_folder
from workflows.options import DATASET_KEY_PARAM

SHA256_METADATA = "sha256"  # x-amz-meta-sha256 on each object sent: what a later upload of the key checks it against


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


def _marker_text(store: S3Store, key: str) -> bytes | None:
    """The bytes of the `_SUCCESS` at `key`; None without one."""
    try:
        return store.get_with_etag(f"{key}/{COMPLETE_MARKER}")[0]
    except ArtifactNotFound:
        return None


def _marker_files(store: S3Store, key: str, text: bytes | None) -> dict[str, Any] | None:
    """The files a kolora marker `text` at `key` lists, read as the ingest pod reads it; None without one."""
    return None if text is None else listed_files(text, f"s3://{store.bucket}/{key}")


def _is_upload(store: S3Store, key: str) -> bool:
    """Whether `key` holds a kolora upload, or one being written."""
    return store.exists(f"{key}/{UPLOADING}") or _marker_files(store, key, _marker_text(store, key)) is not None


@dataclass(frozen=True)
class _Stored:
    """What the key holds before this upload writes anything: one listing's sizes, by name under the key, and the
    bytes of its `_SUCCESS` (None without one)."""

    sizes: dict[str, int]
    marker: bytes | None


def _stored(store: S3Store, key: str) -> _Stored:
    prefix = f"{key}/"
    listed = store.object_sizes(prefix).items()
    sizes = {k[len(prefix) :]: size for k, size in listed if not k.endswith("/")}  # folder markers of consoles: harmless
    return _Stored(sizes, _marker_text(store, key) if COMPLETE_MARKER in sizes else None)


def _is_release_object(rel: str) -> bool:
    """Whether `rel` is what publishing writes (a version's release.json, a model's latest.json)."""
    return rel.rsplit("/", 1)[-1] in (RELEASE_MANIFEST, LATEST)


def _earlier_upload(store: S3Store, key: str, stored: _Stored, files: list[UploadFile], replace: bool = False) -> list[str]:
    """The keys of the earlier kolora upload at `key` that this one no longer has, to delete once it is sent.

    Refused before anything is written: a key inside another upload or holding one below it (never deleted), one
    holding published releases (the release prefix, `models/...`: --replace deleted every version), and, unless
    `replace`, objects no kolora upload of this key wrote (files synced by other tools): this command
    deletes only what it is told to, and ingest would refuse an upload beside files its `_SUCCESS` does not list.
    After a cut-off upload (`.uploading` still there) everything under the key is that upload's.
    """
    parts = key.split("/")
    for outer in ("/".join(parts[:n]) for n in range(1, len(parts))):
        if _is_upload(store, outer):
            raise KoloraError(f"key {key} lies inside the upload s3://{store.bucket}/{outer}/: give a key beside it")
    nested = {rel.rsplit("/", 1)[0] for rel in stored.sizes if rel.endswith((f"/{COMPLETE_MARKER}", f"/{UPLOADING}"))}
    inner = sorted(f"{key}/{rel}" for rel in nested if _is_upload(store, f"{key}/{rel}"))
    if inner:
        raise KoloraError(f"key {key} holds the upload(s) {name_some(inner, 3)}: give a key beside them")
    prefix = f"{key}/"
    new = {f.rel for f in files}
    earlier = set(_marker_files(store, key, stored.marker) or {})
    published = sorted(prefix + rel for rel in stored.sizes if rel not in new | earlier and _is_release_object(rel))
    if published:
        raise KoloraError(
            f"s3://{store.bucket}/{prefix} holds published releases ({name_some(published, 3)}): upload to another key, "
            "such as datasets/<name> (releases are never deleted, --replace or not)"
        )
    if UPLOADING in stored.sizes or replace:
        return sorted(prefix + rel for rel in stored.sizes if rel not in new | set(RESERVED))
    foreign = [prefix + rel for rel in stored.sizes if rel not in new | earlier | {COMPLETE_MARKER}]
    if foreign:
        raise KoloraError(
            f"s3://{store.bucket}/{prefix} already holds {len(foreign)} object(s) no kolora upload of this key wrote "
            f"({name_some(foreign, 3)}): upload to another key, or pass --replace to delete them"
        )
    return sorted(prefix + rel for rel in earlier - new)


def _already_there(store: S3Store, key: str, stored: _Stored, files: list[UploadFile]) -> set[str]:
    """The names of the files the key already holds as they are here, which are not sent again.

    Only what the store says about each object now is trusted: its size (the listing) and the sha256 that kolora
    upload stored with it (`SHA256_METADATA`, one HEAD, asked only of objects of the right size); no object is read
    back. Not `_SUCCESS`: it says what an upload sent, not what is there since (another tool's put over an object
    replaces its metadata too, so that object is sent again), and a cut-off upload wrote none, yet every object it
    put carries its sha256. An object without one (another tool's, or an upload older than this metadata) is sent.
    """
    prefix = f"{key}/"
    candidates = [f for f in files if stored.sizes.get(f.rel) == f.size]
    metadata = store.user_metadata([prefix + f.rel for f in candidates])
    return {f.rel for f in candidates if metadata.get(prefix + f.rel, {}).get(SHA256_METADATA) == f.sha256}


def _changed(f: UploadFile) -> KoloraError:
    return KoloraError(f"{f.path} changed while it was being uploaded: run kolora upload again once it is settled")


def _send(store: S3Store, key: str, f: UploadFile) -> None:
    """Put `f` with its sha256 as metadata. An object whose file changed while it was sent is deleted again before
    the refusal: its bytes may not be the ones its sha256 names, and a later upload would keep it."""
    if f.changed():  # deleted or rewritten since the scan
        raise _changed(f)
    store.upload_file(f.path, f"{key}/{f.rel}", metadata={SHA256_METADATA: f.sha256})
    if f.changed():  # rewritten while it was sent
        store.delete_keys([f"{key}/{f.rel}"])
        raise _changed(f)


@dataclass(frozen=True)
class Uploaded:
    """What `upload_folder` did: the files it sent, how many it found already there, how many objects it deleted."""

    sent: list[UploadFile]
    kept: int
    removed: int


def upload_folder(store: S3Store, key: str, files: list[UploadFile], replace: bool = False) -> Uploaded:
    """Send `files` under `key` in the marked order (module doc), all but those already there (`_already_there`),
    and delete the objects of an earlier upload the folder no longer has (with `replace`: any others too). A key
    that already holds exactly this upload is not written at all. A file that changed while it was sent stops the
    upload (the key stays marked: run it again)."""
    stored = _stored(store, key)
    stale = _earlier_upload(store, key, stored, files, replace)
    kept = _already_there(store, key, stored, files)
    todo = [f for f in files if f.rel not in kept]
    marker = marker_text(key, files)
    if todo or stale or UPLOADING in stored.sizes or stored.marker != marker.encode():
        prefix = f"{key}/"
        store.put_text(prefix + UPLOADING, "kolora upload in progress\n")
        for f in todo:
            _send(store, key, f)
        store.delete_keys(stale)
        store.put_text(prefix + COMPLETE_MARKER, marker)
        store.delete_keys([prefix + UPLOADING])
    return Uploaded(todo, len(kept), len(stale))


def _refuse_store_inside(folder: Path, store_dir: Path) -> None:
    """The embedded store writes its data into its directory while serving the upload: never upload that."""
    folder, store_dir = folder.resolve(), store_dir.resolve()
    if store_dir == folder or folder in store_dir.parents or store_dir in folder.parents:
        raise KoloraError(f"{folder} holds (or lies in) the embedded store {store_dir}: upload the folder of your images")


def _upload_command(args: argparse.Namespace) -> int:
    key = clean_dataset_key(args.key, "key")
    check_bucket_flag(args)
    if embedded(args):
        _refuse_store_inside(args.folder, store_dir(args))
    files = scan_folder(args.folder)
    _check_readable(args.folder, files)
    with open_store(args, unreachable_fix=OR_EMBEDDED, at_command_line=True) as store:
        done = upload_folder(store, key, files, args.replace)
        where = store_label(args, store)
    size = size_text(sum(f.size for f in files))
    sent = f"; sent {len(done.sent)} ({size_text(sum(f.size for f in done.sent))}), {done.kept} already there"
    gone = f"; removed {done.removed} object(s) the folder no longer has" if done.removed else ""
    print(f"kolora upload: {len(files)} file(s), {size}, to s3://{args.bucket}/{key}/ on {where}{sent}{gone}")
    print(f"kolora upload: read it with -p {DATASET_KEY_PARAM}={key}")
    return 0
