"""`kolora upload` against a real S3 server (SeaweedFS on 127.0.0.1), and what ingest's shell then accepts.

An upload is marked `.uploading` before its first file and `_SUCCESS` (sizes, sha256) after its last; what a pod
downloads from the key is checked against that marker before a file of it is read (kolora_core/upload_marker.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from kolora_core.cli import main
from kolora_core.cli import upload as upload_command
from kolora_core.cli.upload import upload_folder
from kolora_core.errors import KoloraError, TransientError
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import MiB, S3Store, make_client
from kolora_core.upload_marker import UPLOADING, check_upload, scan_folder

pytestmark = pytest.mark.usefixtures("store_credentials")  # steps reach the store with the keys of the environment


def my_images(folder: Path, colours: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    (folder / "more").mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in colours:
        Image.new("RGB", (96, 80), colour).save(folder / f"{colour}.png")
        rows.append(json.dumps({"file_name": f"{colour}.png", "text": f"a {colour} square"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    Image.new("RGB", (64, 64), "white").save(folder / "more" / "white.jpg")
    return folder


def upload(store: S3Store, *argv: str) -> int:
    return main(["upload", *argv, "--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket])


def arrived(store: S3Store, key: str, into: Path) -> Path:
    """The key's objects as files under one folder, as the ingest pod receives them (Argo fetches them in listing
    order, the runner markers last: the check reads the folder once everything is there, so the order is moot)."""
    store.download_tree(key, into)
    return into


def test_an_upload_arrives_checked_and_a_second_one_replaces_it(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    assert upload(store, str(folder), "datasets/my-style/") == 0
    out = capsys.readouterr().out
    assert "5 file(s), " in out and f" KiB, to s3://{store.bucket}/datasets/my-style/" in out
    assert "read it with -p dataset-key=datasets/my-style" in out
    keys = sorted(k.removeprefix("datasets/my-style/") for k in store.list_keys("datasets/my-style/"))
    assert keys == ["_SUCCESS", "blue.png", "green.png", "metadata.jsonl", "more/white.jpg", "red.png"]
    marker = json.loads(store.get_with_etag("datasets/my-style/_SUCCESS")[0])
    assert marker["kind"] == "kolora-upload" and marker["key"] == "datasets/my-style"
    assert marker["files"]["red.png"]["size"] == (folder / "red.png").stat().st_size
    check_upload(arrived(store, "datasets/my-style", tmp_path / "pod1"), "the upload")  # accepted as it is

    # the folder changes: one image gone, one new; the second upload leaves no object of the first behind
    (folder / "green.png").unlink()
    my_images(folder, ("black",))
    assert upload(store, str(folder), "datasets/my-style") == 0
    assert "removed 1 object(s) the folder no longer has" in capsys.readouterr().out
    keys = sorted(k.removeprefix("datasets/my-style/") for k in store.list_keys("datasets/my-style/"))
    assert keys == ["_SUCCESS", "black.png", "blue.png", "metadata.jsonl", "more/white.jpg", "red.png"]
    check_upload(arrived(store, "datasets/my-style", tmp_path / "pod2"), "the upload")


class CutOff(S3Store):
    """A store whose connection drops after `allowed` file uploads, as a laptop closed mid-upload leaves it."""

    allowed = 2

    def upload_file(self, path: Path, key: str, metadata: dict[str, str] | None = None) -> None:
        if self.allowed == 0:
            raise KoloraError("connection lost")
        self.allowed -= 1
        super().upload_file(path, key, metadata)


def test_a_cut_off_upload_is_refused_as_transient_until_it_is_run_again(store: S3Store, tmp_path: Path) -> None:
    folder = my_images(tmp_path / "my-style")
    files = scan_folder(folder)
    with pytest.raises(KoloraError, match="connection lost"):
        upload_folder(CutOff(store.settings), "datasets/cut", files)
    assert store.exists(f"datasets/cut/{UPLOADING}") and not store.exists("datasets/cut/_SUCCESS")
    with pytest.raises(TransientError, match="is being written") as refused:
        check_upload(arrived(store, "datasets/cut", tmp_path / "pod1"), "the upload 'datasets/cut'")
    assert refused.value.exit_code == 75  # retried by the workflow, unlike a user error
    assert "running kolora upload again" in str(refused.value)
    (folder / "blue.png").unlink()  # sent by the cut-off attempt, gone from the folder before it is run again
    assert store.exists("datasets/cut/blue.png")
    assert upload_folder(store, "datasets/cut", scan_folder(folder)).removed == 1
    assert not store.exists(f"datasets/cut/{UPLOADING}") and not store.exists("datasets/cut/blue.png")
    check_upload(arrived(store, "datasets/cut", tmp_path / "pod2"), "the upload 'datasets/cut'")


def test_what_changed_since_the_upload_is_refused_naming_the_file(store: S3Store, tmp_path: Path) -> None:
    folder = my_images(tmp_path / "my-style")
    upload_folder(store, "datasets/x", scan_folder(folder))

    def pod(name: str) -> Path:
        return arrived(store, "datasets/x", tmp_path / name)

    changed = pod("changed")
    Image.new("RGB", (96, 80), "purple").save(changed / "red.png")  # rewritten by another tool since
    with pytest.raises(TransientError, match=r"the upload: red.png differs from what kolora upload sent") as refused:
        check_upload(changed, "the upload")
    assert "if another tool wrote to it, upload the folder again with kolora upload (--replace" in str(refused.value)
    added = pod("added")
    (added / "late.png").write_bytes((added / "red.png").read_bytes())  # synced in after the upload
    with pytest.raises(TransientError, match=r"holds 1 file\(s\) its _SUCCESS does not list \(late.png\)"):
        check_upload(added, "the upload")
    missing = pod("missing")
    (missing / "more" / "white.jpg").unlink()
    with pytest.raises(TransientError, match=r"more/white\.jpg is listed in its _SUCCESS but did not arrive"):
        check_upload(missing, "the upload")


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('{"kind": "kolora-upload", "files": ["a.png"]}', "lists no files"),
        ('{"kind": "kolora-upload", "files": {"../etc/passwd": {"size": 1, "sha256": "' + "0" * 64 + '"}}}', "not a file inside"),
        ('{"kind": "kolora-upload", "files": {"a\\\\b.png": {"size": 1, "sha256": "' + "0" * 64 + '"}}}', "not a file inside"),
        ('{"kind": "kolora-upload", "files": {"a.png": {"size": "1", "sha256": "x"}}}', "has no size and sha256"),
    ],
)
def test_a_marker_is_data_checked_before_it_is_trusted(tmp_path: Path, marker: str, message: str) -> None:
    (tmp_path / "_SUCCESS").write_text(marker, encoding="utf-8")
    with pytest.raises(KoloraError, match=message):
        check_upload(tmp_path, "the upload")


@pytest.mark.parametrize("marker", [None, "", "not json", '{"stage": "ingest", "files": ["0.png"]}'])
def test_a_plain_sync_is_read_as_it_is(tmp_path: Path, caplog: pytest.LogCaptureFixture, marker: str | None) -> None:
    """No marker, or another writer's `_SUCCESS` (Spark's empty one beside its parquet files, a kolora commit)."""
    folder = my_images(tmp_path / "synced")
    if marker is not None:
        (folder / "_SUCCESS").write_text(marker, encoding="utf-8")
    with caplog.at_level("INFO", logger="kolora"):
        check_upload(folder, "the upload 'datasets/synced'")
    assert "has no _SUCCESS of kolora upload: read as it is" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "notes.txt").write_text("no images"), "holds no images"),
        (lambda d: (d / "a.png").symlink_to("/etc/hostname"), "is a symbolic link"),
        (lambda d: (d / "_SUCCESS").write_text("{}"), "the name of an upload's own marker"),
        (lambda d: (d / "_SUCCESS").mkdir(), "the name of an upload's own marker"),
        (lambda d: (d / "._a.png").write_bytes(b"macOS resource fork"), "holds no images"),  # ingest skips hidden files
        (lambda d: (d / ".thumbnails").mkdir() or (d / ".thumbnails" / "a.png").write_bytes(b"x"), "holds no images"),
    ],
)
def test_a_folder_ingest_could_not_read_is_refused_before_anything_is_sent(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    make(folder)  # type: ignore[operator]
    assert upload(store, str(folder), "datasets/bad") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert store.list_keys("datasets/") == []


def test_a_key_is_checked_as_dataset_key_is(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = my_images(tmp_path / "my-style")
    for key in ("s3://bucket/datasets/x", "/datasets/x", "datasets//x", "datasets/../x", " datasets/x"):
        assert upload(store, str(folder), key) == 2
        assert "give the key prefix inside the artifact repository's bucket" in capsys.readouterr().err
    assert store.list_keys("") == []


def test_without_an_endpoint_it_fills_the_embedded_store_of_kolora_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    runs = tmp_path / "runs"
    assert main(["upload", str(folder), "datasets/my-style", "--runs-dir", str(runs)]) == 0
    assert f"on the embedded store ({runs / STORE_DIRNAME})" in capsys.readouterr().out
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:  # what `kolora run --runs-dir runs` starts next
        assert S3Store(settings).exists("datasets/my-style/_SUCCESS")


def test_keys_around_other_uploads_are_refused_and_foreign_objects_need_replace(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    upload_folder(store, "datasets/my-style", scan_folder(folder))
    before = sorted(store.list_keys(""))
    assert upload(store, str(folder), "datasets") == 2  # a parent of another upload: never emptied
    err = capsys.readouterr().err.strip()
    assert err.endswith("key datasets holds the upload(s) datasets/my-style: give a key beside them")
    assert upload(store, str(folder), "datasets/my-style/v2") == 2  # inside an upload: it would add files to it
    assert "key datasets/my-style/v2 lies inside the upload s3://" in capsys.readouterr().err
    assert sorted(store.list_keys("")) == before, "nothing written, nothing deleted"

    store.put_text("datasets/synced/notes.txt", "put there by another tool")
    assert upload(store, str(folder), "datasets/synced") == 2
    err = capsys.readouterr().err.strip()
    assert f"s3://{store.bucket}/datasets/synced/ already holds 1 object(s) no kolora upload of this key wrote" in err
    assert "(datasets/synced/notes.txt): upload to another key, or pass --replace to delete them" in err
    assert len(err.splitlines()) == 1 and store.exists("datasets/synced/notes.txt")
    assert upload(store, str(folder), "datasets/synced", "--replace") == 0
    assert "removed 1 object(s) the folder no longer has" in capsys.readouterr().out
    assert not store.exists("datasets/synced/notes.txt")
    check_upload(arrived(store, "datasets/synced", tmp_path / "pod"), "the upload")


def test_a_key_holding_published_releases_is_refused_even_with_replace(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kolora upload ./imgs models --replace` deleted every published version and latest.json: the release prefix
    got the advice every foreign object gets ("pass --replace to delete them"), though releases are never deleted."""
    folder = my_images(tmp_path / "my-style")
    store.put_text("models/kolora/v1/release.json", "{}")
    store.put_text("models/kolora/latest.json", "{}")
    before = sorted(store.list_keys(""))
    for key in ("models", "models/kolora"):
        assert upload(store, str(folder), key, "--replace") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"s3://{store.bucket}/{key}/ holds published releases (models/kolora/" in err, err
        assert err.endswith("upload to another key, such as datasets/<name> (releases are never deleted, --replace or not)\n")
    assert sorted(store.list_keys("")) == before, "nothing written, nothing deleted"
    (folder / "release.json").write_text("{}")  # a file of the folder's own, uploaded and uploaded again: not a release
    assert upload(store, str(folder), "datasets/my-style") == 0 and upload(store, str(folder), "datasets/my-style") == 0


def test_ctrl_c_is_one_line_and_exit_130(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while a big folder was hashed or sent printed a 78-line KeyboardInterrupt traceback."""
    folder = my_images(tmp_path / "my-style")

    def ctrl_c(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(upload_command, "scan_folder", ctrl_c)
    assert upload(store, str(folder), "datasets/my-style") == 130
    assert capsys.readouterr().err == "kolora upload: interrupted; run it again\n"


def test_a_key_naming_a_parent_of_uploads_is_refused_in_the_pod(store: S3Store, tmp_path: Path) -> None:
    """`-p dataset-key=datasets` over two uploads would read both (their own checks skipped) as one folder."""
    for name in ("a", "b"):
        folder = my_images(tmp_path / name)
        upload_folder(store, f"datasets/{name}", scan_folder(folder))
    with pytest.raises(KoloraError, match=r"the upload 'datasets' holds the kolora upload\(s\) a, b: name one of them"):
        check_upload(arrived(store, "datasets", tmp_path / "pod"), "the upload 'datasets'")


class Rewriting(S3Store):
    """A store that, while the first file is being sent, sees it rewritten (an editor saving over it)."""

    def upload_file(self, path: Path, key: str, metadata: dict[str, str] | None = None) -> None:
        super().upload_file(path, key, metadata)
        Image.new("RGB", (96, 80), "purple").save(path)


def test_a_file_that_changes_while_it_is_sent_stops_the_upload_marked(store: S3Store, tmp_path: Path) -> None:
    folder = my_images(tmp_path / "my-style")
    with pytest.raises(KoloraError, match="changed while it was being uploaded: run kolora upload again"):
        upload_folder(Rewriting(store.settings), "datasets/moving", scan_folder(folder))
    assert store.exists(f"datasets/moving/{UPLOADING}") and not store.exists("datasets/moving/_SUCCESS")
    # its object may hold the bytes of neither version, under the sha256 of the first: gone, so the rerun sends it
    assert not store.exists("datasets/moving/blue.png")
    assert upload_folder(store, "datasets/moving", scan_folder(folder)).kept == 0
    check_upload(arrived(store, "datasets/moving", tmp_path / "pod"), "the upload")


def test_names_no_key_can_carry_and_the_embedded_store_itself_are_refused_before_sending(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    odd = os.fsencode(folder) + b"/\xff.png"
    Path(os.fsdecode(odd)).write_bytes((folder / "red.png").read_bytes())
    assert upload(store, str(folder), "datasets/odd") == 2
    assert "my-style/\\xff.png: its name is not UTF-8, which an object key must be: rename it" in capsys.readouterr().err
    assert store.list_keys("") == []
    runs = tmp_path / "runs"
    (runs / STORE_DIRNAME).mkdir(parents=True)
    assert main(["upload", str(runs), "datasets/store", "--runs-dir", str(runs)]) == 2
    assert "holds (or lies in) the embedded store" in capsys.readouterr().err


def test_another_writers_marker_above_a_key_is_no_upload(store: S3Store, tmp_path: Path) -> None:
    """Spark leaves an empty `_SUCCESS` beside its parquet files: only a kolora marker makes a key an upload."""
    store.put_text("exports/_SUCCESS", "")
    folder = my_images(tmp_path / "my-style")
    upload_folder(store, "exports/my-style", scan_folder(folder))
    check_upload(arrived(store, "exports/my-style", tmp_path / "pod"), "the upload")


class NoDelete(S3Store):
    """A bucket policy that allows writes but no deletes: S3 answers 200 and lists the keys it kept."""

    def _delete(self, keys: list[str], progress: object) -> None:
        answer = {"Errors": [{"Key": k, "Code": "AccessDenied", "Message": "Access Denied"} for k in keys]}
        self._client.delete_objects = lambda **_: answer  # type: ignore[method-assign]
        super()._delete(keys, progress)  # type: ignore[arg-type]


def test_an_object_the_server_kept_is_an_error_not_a_success(store: S3Store, tmp_path: Path) -> None:
    folder = my_images(tmp_path / "my-style")
    with pytest.raises(KoloraError, match=r"did not delete s3://.*/datasets/kept/\.uploading \(AccessDenied: Access Denied\)"):
        upload_folder(NoDelete(store.settings), "datasets/kept", scan_folder(folder))


def stamps(store: S3Store, key: str) -> dict[str, tuple[str, object]]:
    """Each object's ETag and LastModified under `key`: what a put over it changes, even with the same bytes."""
    listed = make_client(store.settings).list_objects_v2(Bucket=store.bucket, Prefix=f"{key}/")["Contents"]
    return {o["Key"].removeprefix(f"{key}/"): (o["ETag"], o["LastModified"]) for o in listed}


def a_second_later() -> None:
    """LastModified counts whole seconds: a put after this one shows in it."""
    time.sleep(1.1)


def test_an_upload_again_sends_only_what_the_key_does_not_hold(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    assert upload(store, str(folder), "datasets/my-style") == 0
    assert ", 0 already there\n" in capsys.readouterr().out.splitlines(keepends=True)[0]
    assert store.user_metadata(["datasets/my-style/red.png"])["datasets/my-style/red.png"]["sha256"] == next(
        f.sha256 for f in scan_folder(folder) if f.rel == "red.png"
    )
    first = stamps(store, "datasets/my-style")
    a_second_later()

    assert upload(store, str(folder), "datasets/my-style") == 0  # unchanged: nothing written, not even the marks
    where = f"s3://{store.bucket}/datasets/my-style/ on S3 endpoint {store.settings.endpoint_url}"
    assert capsys.readouterr().out.splitlines()[0].endswith(f" KiB, to {where}; sent 0 (0.0 KiB), 5 already there")
    assert stamps(store, "datasets/my-style") == first

    captions = folder / "metadata.jsonl"  # the same size, other bytes: sent again
    captions.write_text(captions.read_text(encoding="utf-8").replace("a red", "a rad"), encoding="utf-8")
    blue = store.object_sizes("datasets/my-style/blue.png")["datasets/my-style/blue.png"]
    store.put_text("datasets/my-style/blue.png", "x" * blue)  # an `aws s3 cp` over it: its size, no sha256 of kolora
    assert upload(store, str(folder), "datasets/my-style") == 0
    assert "; sent 2 (" in (out := capsys.readouterr().out) and " KiB), 3 already there\n" in out
    now = stamps(store, "datasets/my-style")
    assert {rel for rel in now if now[rel] != first[rel]} == {"metadata.jsonl", "blue.png", "_SUCCESS"}
    pod = arrived(store, "datasets/my-style", tmp_path / "pod")
    check_upload(pod, "the upload")
    assert (pod / "metadata.jsonl").read_bytes() == captions.read_bytes()
    assert (pod / "blue.png").read_bytes() == (folder / "blue.png").read_bytes()


def test_a_cut_off_upload_run_again_sends_only_what_it_had_not_sent(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = my_images(tmp_path / "my-style")
    with pytest.raises(KoloraError, match="connection lost"):  # the third put fails: blue.png and green.png are there
        upload_folder(CutOff(store.settings), "datasets/cut", scan_folder(folder))
    before = stamps(store, "datasets/cut")
    assert sorted(before) == [UPLOADING, "blue.png", "green.png"]
    a_second_later()
    assert upload(store, str(folder), "datasets/cut") == 0
    sent = sum(f.size for f in scan_folder(folder) if f.rel not in {"blue.png", "green.png"})
    assert f"; sent 3 ({sent / 1024:.1f} KiB), 2 already there\n" in capsys.readouterr().out
    after = stamps(store, "datasets/cut")
    assert {rel: after[rel] for rel in ("blue.png", "green.png")} == {rel: before[rel] for rel in ("blue.png", "green.png")}
    assert UPLOADING not in after
    check_upload(arrived(store, "datasets/cut", tmp_path / "pod"), "the upload 'datasets/cut'")


def test_an_object_sent_in_parts_is_found_already_there(store: S3Store, tmp_path: Path) -> None:
    """The metadata goes with a multipart upload too (CreateMultipartUpload carries it)."""
    folder = my_images(tmp_path / "my-style", ("red",))
    (folder / "big.bin").write_bytes(os.urandom(9 * MiB))
    parts = S3Store(dataclasses.replace(store.settings, multipart_threshold=5 * MiB))  # 8 MiB parts: two of them
    assert len(upload_folder(parts, "datasets/big", scan_folder(folder)).sent) == 4
    assert '-2"' in stamps(store, "datasets/big")["big.bin"][0]  # an ETag of two parts
    again = upload_folder(parts, "datasets/big", scan_folder(folder))
    assert (again.sent, again.kept) == ([], 4)
