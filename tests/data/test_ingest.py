"""The ingest stage on a folder holding every bad kind: kept set, reasons, report numbers, layout, reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from jobs.ingest import main as ingest_main
from kolora_core.data.ingest import caption_for, ingest_to
from kolora_core.data.layout import DATASET_JSONL, INGEST_REPORT, read_records
from kolora_core.errors import KoloraError
from tests.data.conftest import BAD_FOLDER, encode, ingest_config, picture

KEPT = sorted(n for n, outcome in BAD_FOLDER.items() if outcome == "kept")


@pytest.fixture(scope="module")
def ingested(bad_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dataset")
    report = ingest_to(ingest_config(str(bad_folder), caption=None, trigger_word="kol"), out)
    return out, report


def test_kept_set_and_skip_reasons(ingested: tuple[Path, dict]) -> None:
    out, report = ingested
    records = list(read_records(out))
    assert sorted(r.original_id for r in records) == KEPT
    image_skips = {s["original_id"]: s["kind"] for s in report["skips"] if s["original_id"] in BAD_FOLDER}
    assert image_skips == {n: kind for n, kind in BAD_FOLDER.items() if kind != "kept"}
    assert {s["original_id"]: s["kind"] for s in report["skips"]}["gbk.txt"] == "caption_file_not_utf8"
    duplicate = next(s for s in report["skips"] if s["kind"] == "duplicate")
    assert duplicate["reason"] == "same pixels as good_a.png"
    assert all(s["reason"] for s in report["skips"])


def test_report_numbers(ingested: tuple[Path, dict]) -> None:
    _, report = ingested
    assert report["images_read"] == len(BAD_FOLDER)
    assert report["kept"] == len(KEPT)
    assert report["skipped"] == len(BAD_FOLDER) - len(KEPT)
    assert report["duplicates"] == 1 and report["problems"] == 1
    assert report["skipped_by_kind"]["missing_caption"] == 2
    assert report["source"].startswith("folder:") and "/" not in report["source"].removeprefix("folder:")


def test_records_layout_and_provenance(ingested: tuple[Path, dict], bad_folder: Path) -> None:
    out, _ = ingested
    records = {r.original_id: r for r in read_records(out)}
    for r in records.values():
        path = out / r.image
        assert r.image == f"images/{r.id}.png" and not Path(r.image).is_absolute()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r.sha256 and r.id == r.sha256[:16]
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (r.width, r.height)
    assert records["good_a.png"].text == "kol, caption of good_a.png, 二次元"
    assert records["sub/good_c.png"].text == "kol, a sidecar caption"
    assert records["rotated.jpg"].width == 120 and records["rotated.jpg"].height == 200
    assert records["good_b.jpg"].source_sha256 == hashlib.sha256((bad_folder / "good_b.jpg").read_bytes()).hexdigest()
    lines = (out / DATASET_JSONL).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["original_id"] for line in lines] == sorted(records, key=lambda n: n)  # source order = sorted paths


def test_rerun_writes_identical_files(ingested: tuple[Path, dict], bad_folder: Path, tmp_path: Path) -> None:
    out, _ = ingested
    ingest_to(ingest_config(str(bad_folder), caption=None, trigger_word="kol"), tmp_path)

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert tree(tmp_path) == tree(out)


def test_caption_override_keeps_uncaptioned_images(bad_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="kolora.ingest"):
        report = ingest_to(ingest_config(str(bad_folder)), tmp_path)  # caption "二次元", the seed's
    assert report["kept"] == len(KEPT) + 2  # nocaption.png and gbk.png now have a caption
    assert {r.text for r in read_records(tmp_path)} == {"二次元"}
    # the source's own captions were replaced: said once, with how to keep them (a user's upload has its own)
    replaced = report["captions_replaced"]
    assert replaced > 0 and report["kept"] > replaced  # nocaption.png had none to replace
    line = f"ingest.caption '二次元' replaced the source's own captions of {replaced} images (ingest.caption: null"
    assert sum(line in r.message for r in caplog.records) == 1
    with caplog.at_level("INFO", logger="kolora.ingest"):
        caplog.clear()
        kept = ingest_to(ingest_config(str(bad_folder), caption=None), tmp_path / "own")
    assert kept["captions_replaced"] == 0 and not [r for r in caplog.records if "replaced the source" in r.message]


def test_caption_rules() -> None:
    config = ingest_config("smoke://")
    assert caption_for(config, "source text") == "二次元"
    assert caption_for(config.model_copy(update={"caption": None}), " a  b ") == "a b"
    assert caption_for(config.model_copy(update={"caption": None}), None) is None
    assert caption_for(config.model_copy(update={"trigger_word": "kstyle"}), None) == "kstyle, 二次元"
    assert caption_for(config.model_copy(update={"trigger_word": "kstyle", "caption": None}), "") is None


def test_max_images_stops_early(tmp_path: Path) -> None:
    report = ingest_to(ingest_config("smoke://", max_images=3), tmp_path)
    assert report["kept"] == 3 and report["stopped_at_max_images"]
    assert len(list((tmp_path / "images").iterdir())) == 3


def test_nothing_usable_is_one_line_with_the_reasons(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_text("not an image", encoding="utf-8")
    with pytest.raises(KoloraError) as caught:
        ingest_to(ingest_config(str(src)), tmp_path / "out")
    message = str(caught.value)
    assert "no usable images" in message and "1 empty_file" in message and "1 not_an_image" in message
    assert "\n" not in message


def test_nothing_usable_counts_the_images_apart_from_the_other_files(tmp_path: Path) -> None:
    """The metadata file's problem was counted among the images ('all 1 skipped (1 caption_file_not_utf8, 1
    missing_caption)') and shown as the image example; it is the reason why, said apart."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (src / "metadata.csv").write_bytes("file_name,text\na.png,二次元\n".encode("gbk"))
    with pytest.raises(KoloraError) as caught:
        ingest_to(ingest_config(str(src), caption=None), tmp_path / "out")
    assert str(caught.value) == (
        f"no usable images in ingest.source {src}: all 1 skipped (1 missing_caption); e.g. a.png: no caption in the "
        "source and ingest.caption is null; 1 other files not used (1 caption_file_not_utf8), e.g. metadata.csv: "
        "not UTF-8 (byte 0xb6 at offset 21): re-save it as UTF-8; its captions are ignored"
    )


def test_folder_without_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(KoloraError, match="holds no images"):
        ingest_to(ingest_config(str(tmp_path)), tmp_path / "out")


def test_cli_smoke_and_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ingest_main(["--profile", "smoke", "--dataset", str(tmp_path / "ds")]) == 0
    report = json.loads((tmp_path / "ds" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert report["images_read"] == report["kept"] == 16 and (tmp_path / "ds" / "_SUCCESS").exists()

    missing = tmp_path / "no-such-folder"
    code = ingest_main(["--profile", "smoke", "--ingest.source", str(missing), "--dataset", str(tmp_path / "ds2")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("kolora ingest: error:") and str(missing) in last
    assert not (tmp_path / "ds2" / "_SUCCESS").exists()


def test_cli_source_is_the_users_folder_read_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--source DIR` (the workflow's `dataset-key` upload) replaces ingest.source; it is no commit, so nothing in it
    is pruned; a directory that does not exist is not given; a file or an overlap with the output is one line."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(2):
        (mine / f"{i}.png").write_bytes(encode(picture((128, 128), i), "PNG"))
    (mine / "notes.txt").write_text("kept: an upload is not pruned by a _SUCCESS", encoding="utf-8")
    (mine / "_SUCCESS").write_text(json.dumps({"stage": "ingest", "files": ["0.png"]}), encoding="utf-8")
    assert ingest_main(["--profile", "smoke", "--source", str(mine), "--dataset", str(tmp_path / "ds")]) == 0
    report = json.loads((tmp_path / "ds" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert (report["source"], report["kept"]) == ("folder:mine", 2) and (mine / "notes.txt").exists()
    assert (mine / "1.png").exists(), "an upload is no commit: a _SUCCESS in it prunes nothing"

    assert ingest_main(["--profile", "smoke", "--source", str(tmp_path / "absent"), "--dataset", str(tmp_path / "ds2")]) == 0
    assert json.loads((tmp_path / "ds2" / INGEST_REPORT).read_text(encoding="utf-8"))["source"] == "smoke://"
    capsys.readouterr()

    marker, absent = tmp_path / "marker", tmp_path / "absent"
    marker.write_bytes(b"")
    folder_marker = "an empty object (a folder marker): name the prefix without a trailing '/'"
    for source, dataset, extra, message in (
        (mine / "0.png", tmp_path / "ds3", [], f"input --source {mine / '0.png'} is a file, not a folder: name the folder"),
        (marker, tmp_path / "ds3", ["--source-from", "d/x/"], f"the upload 'd/x/' (--source {marker}) is a file"),
        (absent, tmp_path / "ds3", ["--source-from", "d/x"], f"the upload 'd/x' did not arrive (nothing at --source {absent})"),
        (mine, mine / "ds", [], f"--dataset {mine / 'ds'} lies inside --source {mine}"),
    ):
        code = ingest_main(["--profile", "smoke", "--source", str(source), "--dataset", str(dataset), *extra])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and last.startswith(f"kolora ingest: error: {message}"), last
        assert source != marker or last.endswith(folder_marker), last
        assert not (dataset / "_SUCCESS").exists()


def test_cli_a_source_that_is_not_there(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The workflow passes --source always, with --source-from its dataset-key: '' (no upload named) is the normal
    local run, said as what it is, not as an error; a --source typed by hand that is not there is a warning."""
    absent = tmp_path / "absent"
    argv = ["--profile", "smoke", "--source", str(absent)]
    with caplog.at_level("INFO", logger="kolora"):
        assert ingest_main([*argv, "--source-from", "", "--dataset", str(tmp_path / "ds")]) == 0
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "--source" in r.getMessage()]
    assert said == [("INFO", "no --source upload named (--source-from is empty): ingest reads the source its config names")]
    caplog.clear()
    with caplog.at_level("INFO", logger="kolora"):
        assert ingest_main([*argv, "--dataset", str(tmp_path / "ds2")]) == 0
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "--source" in r.getMessage()]
    assert said == [
        ("WARNING", f"input --source {absent} does not exist: ingest reads the source its config names; check the path")
    ]
    assert json.loads((tmp_path / "ds2" / INGEST_REPORT).read_text(encoding="utf-8"))["source"] == "smoke://"


def test_stage_log_counts_the_other_files_apart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """'-> 1 kept, 0 skipped (1 not_read)' counted a file that is no image among the skipped images' kinds."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.png").write_bytes(encode(picture((128, 128), 1), "PNG"))
    (tmp_path / "mine" / "b.heic").write_bytes(b"ftypheic")
    with caplog.at_level("INFO", logger="kolora.ingest"):
        assert ingest_main(["--profile", "smoke", "--source", str(tmp_path / "mine"), "--dataset", str(tmp_path / "ds")]) == 0
    assert "1 images from folder:mine -> 1 kept, 0 skipped, 1 other files not used (1 not_read)" in caplog.text


def test_large_sources_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest loop pulls one item at a time: a source that fails at item 3 has written items 0-2 already."""
    from kolora_core.data import ingest as ingest_module
    from kolora_core.data.sources import Item, Source

    written: list[int] = []

    def lazy():
        for i in range(5):
            if i == 3:
                written.append(len(list((tmp_path / "images").iterdir())))
                raise RuntimeError("stop")
            yield Item(f"x{i}", encode(picture((100, 100), i), "PNG"), "t")

    monkeypatch.setattr(ingest_module, "open_source", lambda config: Source("test", "test", lazy()))
    with pytest.raises(RuntimeError):
        ingest_to(ingest_config("smoke://"), tmp_path)
    assert written == [3]
