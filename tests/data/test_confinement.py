"""Ingest never reads outside its source: symlinks that leave a folder, loops, and parquet cells naming host files.

Each case was seen to fail on the code before path confinement: the folder's symlink to an image outside
became training data, the symlink to /etc/passwd put its first bytes into ingest_report.json, and a parquet
row whose image.path was /etc/passwd or ../x.png (without bytes) was read from the host.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kolora_core.data import sources
from kolora_core.data.ingest import ingest_to
from kolora_core.data.layout import read_records, read_trainset
from kolora_core.data.normalise import normalise
from kolora_core.data.sources import Item, Problem, iter_folder
from kolora_core.errors import KoloraError
from tests.data.conftest import encode, ingest_config, picture

HOST_FILE = Path("/etc/passwd")  # what an attacker points at; its first bytes must never reach a report
HOST_BYTES = HOST_FILE.read_bytes()[:8]


def report_text(out: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(out.rglob("*.json*")))


@pytest.fixture()
def escaping_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A source folder with one good image and every way a symlink can leave it; beside it, an image outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode(picture((120, 120), 40), "PNG"))
    root = tmp_path / "source"
    (root / "sub").mkdir(parents=True)
    (root / "good.png").write_bytes(encode(picture((110, 110), 41), "PNG"))
    (root / "sub" / "deep.png").write_bytes(encode(picture((112, 112), 42), "PNG"))
    (root / "passwd.png").symlink_to(HOST_FILE)
    (root / "secret.png").symlink_to(outside / "secret.png")
    (root / "alias.png").symlink_to("sub/deep.png")  # inside the root: read, then a duplicate of sub/deep.png
    (root / "outdir").symlink_to(outside, target_is_directory=True)  # a directory outside: never listed
    (root / "indir").symlink_to("sub", target_is_directory=True)  # inside: its files are listed by their real names
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)  # a cycle back to the root: never entered
    (root / "loop.png").symlink_to("loop.png")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    (root / "dangling.png").symlink_to(tmp_path / "nothing.png")
    (root / "good.txt").symlink_to(HOST_FILE)  # a caption sidecar pointing at a host file
    rows = ["file_name,text", "../outside/secret.png,escaped", f"{HOST_FILE},escaped"]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root, outside


def test_folder_symlinks_out_of_the_root_are_refused_per_file(escaping_folder: tuple[Path, Path]) -> None:
    root, _ = escaping_folder
    events = list(iter_folder(root))
    skipped = {e.original_id: e.skip[0] for e in events if isinstance(e, Item) and e.skip}
    read = {e.original_id for e in events if isinstance(e, Item) and e.data}
    problems = {e.original_id: e.kind for e in events if isinstance(e, Problem)}
    assert read == {"good.png", "sub/deep.png", "alias.png"}
    assert skipped == {
        "passwd.png": "outside_source",
        "secret.png": "outside_source",
        "loop.png": "symlink_loop",
        "dangling.png": "missing_file",
        "../outside/secret.png": "missing_file",  # metadata names are matched, never opened
        str(HOST_FILE): "missing_file",
    }
    assert problems == {"outdir": "outside_source", "good.txt": "outside_source", "ping": "symlink_loop", "pong": "symlink_loop"}
    assert not any(e.text and "root" in e.text for e in events if isinstance(e, Item))


def test_ingest_of_an_escaping_folder_keeps_only_its_own_images(escaping_folder: tuple[Path, Path], tmp_path: Path) -> None:
    root, outside = escaping_folder
    out = tmp_path / "dataset"
    report = ingest_to(ingest_config(str(root)), out)
    secret = normalise((outside / "secret.png").read_bytes()).sha256
    records = list(read_records(out))
    assert sorted(r.original_id for r in records) == ["alias.png", "good.png"]  # sub/deep.png: a duplicate of alias.png
    assert secret not in {r.sha256 for r in records}
    reasons = {s["original_id"]: s["reason"] for s in report["skips"]}
    assert "outside the source root" in reasons["passwd.png"] and "not followed" in reasons["passwd.png"]
    text = json.dumps(report, ensure_ascii=False) + report_text(out)
    assert HOST_BYTES.decode() not in text and repr(HOST_BYTES)[2:-1] not in text


def write_parquet(path: Path, cells: list[dict]) -> None:
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(cells, type=image_type), "text": [f"row {i}" for i in range(len(cells))]})
    pq.write_table(table, path)


@pytest.fixture()
def escaping_parquet(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Parquet rows whose image.path is /etc/passwd or ../x.png, without bytes and with their own bytes."""
    (tmp_path / "x.png").write_bytes(encode(picture((130, 130), 50), "PNG"))  # what ../x.png names, beside the source
    root = tmp_path / "export"
    root.mkdir()
    own = [encode(picture((100 + i, 100), 60 + i), "PNG") for i in range(2)]
    cells = [
        {"bytes": None, "path": str(HOST_FILE)},
        {"bytes": None, "path": "../x.png"},
        {"bytes": own[0], "path": str(HOST_FILE)},
        {"bytes": own[1], "path": "../x.png"},
    ]
    write_parquet(root / "train-00000.parquet", cells)
    return root, own


def test_parquet_path_cells_are_never_opened(escaping_parquet: tuple[Path, list[bytes]]) -> None:
    root, own = escaping_parquet
    events = list(sources.iter_parquet(root))
    assert [e.skip[0] if e.skip else None for e in events] == ["no_image_bytes", "no_image_bytes", None, None]
    assert [e.data for e in events[2:]] == own  # the cell's bytes, not the file it names
    assert "never opened" in events[0].skip[1]


def test_ingest_of_an_escaping_parquet_keeps_the_embedded_bytes_only(
    escaping_parquet: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    root, own = escaping_parquet
    out = tmp_path / "dataset"
    report = ingest_to(ingest_config(str(root)), out)
    assert {r.sha256 for r in read_records(out)} == {normalise(b).sha256 for b in own}
    assert report["skipped_by_kind"] == {"no_image_bytes": 2}
    text = json.dumps(report, ensure_ascii=False) + report_text(out)
    assert HOST_BYTES.decode() not in text and repr(HOST_BYTES)[2:-1] not in text


def test_a_symlinked_parquet_outside_the_folder_is_refused(escaping_parquet: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    root, _ = escaping_parquet
    elsewhere = tmp_path / "elsewhere.parquet"
    write_parquet(elsewhere, [{"bytes": encode(picture((100, 100), 70), "PNG"), "path": None}])
    (root / "train-00001.parquet").symlink_to(elsewhere)
    events = list(sources.iter_parquet(root))
    refused = [e for e in events if isinstance(e, Problem)]
    assert [(p.original_id, p.kind) for p in refused] == [("train-00001.parquet", "outside_source")]
    assert len([e for e in events if isinstance(e, Item)]) == 4


def test_hub_rows_read_files_only_inside_the_dataset_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.png").write_bytes(encode(picture((100, 100), 80), "PNG"))
    (cache / "link.png").symlink_to(HOST_FILE)
    (tmp_path / "b.png").write_bytes(encode(picture((100, 100), 81), "PNG"))
    names = [cache / "a.png", cache / "link.png", HOST_FILE, tmp_path / "b.png", cache / ".." / "b.png", Path("a.png")]
    rows = [{"image": {"bytes": None, "path": str(name)}} for name in names]
    got = list(sources.iter_hf_rows(ListRows(rows), "modelscope://x", (cache.resolve(),)))
    assert got[0].data == (cache / "a.png").read_bytes()
    assert [e.skip[0] for e in got[1:]] == ["outside_source"] * 5
    assert all(e.data is None for e in got[1:])


def test_dataset_roots_of_a_local_glob_include_its_folder(tmp_path: Path) -> None:
    roots = sources._dataset_roots(str(tmp_path / "train-*.parquet"), tmp_path / "cache")
    assert roots == ((tmp_path / "cache").resolve(), tmp_path.resolve())
    assert sources._dataset_roots("AI-ModelScope/lowres_anime", tmp_path) == (tmp_path.resolve(),)


class ListRows(list):
    column_names = ("image",)
    features = None


def test_a_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 90), "PNG"))
    os.mkfifo(tmp_path / "pipe.png")
    got = {e.original_id: e for e in iter_folder(tmp_path)}
    assert got["pipe.png"].skip[0] == "unreadable" and Image.open(io.BytesIO(got["a.png"].data)).size == (100, 100)


@pytest.mark.parametrize("name", ["../../x.png", str(HOST_FILE), "link.png"])
def test_a_trainset_naming_files_outside_itself_is_refused(tmp_path: Path, name: str) -> None:
    """The trainset comes from the bucket on Argo: its metadata.csv is untrusted too."""
    (tmp_path / "x.png").write_bytes(encode(picture((100, 100), 91), "PNG"))
    train = tmp_path / "ts" / "train"
    train.mkdir(parents=True)
    (train / "link.png").symlink_to(HOST_FILE)
    (train / "metadata.csv").write_text(f"file_name,text\n{name},二次元\n", encoding="utf-8")
    with pytest.raises(KoloraError, match=r"lies outside .*\(not read\)"):
        read_trainset(tmp_path / "ts")
