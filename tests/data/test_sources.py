"""Sources: folders with captions, parquet exports, the ModelScope path (offline), smoke://, and bad URIs."""

from __future__ import annotations

import io
import json
import unicodedata
from pathlib import Path

import datasets
import pytest
from PIL import Image

from kolora_core.data import sources
from kolora_core.data.ingest import ingest_to
from kolora_core.data.smoke import smoke_items, smoke_kind, smoke_size
from kolora_core.data.sources import Item, Problem, iter_folder, open_source
from kolora_core.errors import KoloraError
from tests.data.conftest import encode, ingest_config, picture


def events(source: str, **fields) -> list[Item | Problem]:
    return list(open_source(ingest_config(source, **fields)).events)


def items(evs: list) -> dict[str, Item]:
    return {e.original_id: e for e in evs if isinstance(e, Item)}


def hf_rows(count: int, with_text: bool = True) -> list[dict]:
    rows = []
    for i in range(count):
        row = {"image": {"bytes": encode(picture((100 + i, 110), i), "PNG"), "path": None}}
        if with_text:
            row["text"] = f"row {i} 二次元"
        rows.append(row)
    return rows


def hf_dataset(rows: list[dict]) -> datasets.Dataset:
    features = {"image": datasets.Image()}
    if "text" in rows[0]:
        features["text"] = datasets.Value("string")
    return datasets.Dataset.from_list(rows, features=datasets.Features(features))


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet")
    rows = hf_rows(5)
    rows[3]["image"] = {"bytes": b"", "path": None}  # an empty cell
    hf_dataset(rows[:3]).to_parquet(str(root / "train-00000-of-00002.parquet"))
    hf_dataset(rows[3:]).to_parquet(str(root / "train-00001-of-00002.parquet"))
    return root


# --- local folders --------------------------------------------------------------------------------------------


def test_folder_captions_from_csv_jsonl_and_sidecars(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (tmp_path / name).write_bytes(encode(picture((100, 100), ord(name[0])), "PNG"))
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "甲 caption"}, ensure_ascii=False)
        + "\nnot json\n"
        + json.dumps({"file_name": "b.png"})
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "c.txt").write_text("  sidecar\ncaption ", encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    got = items(evs)
    assert sorted(got) == ["a.png", "b.png", "c.png", "d.png"]
    assert got["a.png"].text == "甲 caption"
    assert got["b.png"].text is None  # listed without text
    assert got["c.png"].text == "sidecar caption"  # whitespace normalised
    assert got["d.png"].text is None
    problems = [e for e in evs if isinstance(e, Problem)]
    assert [(p.kind, p.original_id) for p in problems] == [("bad_metadata", "metadata.jsonl:2")]


def test_hidden_files_and_folders_are_not_read(tmp_path: Path) -> None:
    """Jupyter's checkpoint copies and a viewer's thumbnails were read as more training images (other pixels, so no
    duplicates); like dot files, nothing in a dot folder is an image of the dataset, nor a parquet file."""
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    for hidden in (".ipynb_checkpoints/a-checkpoint.png", ".thumbnails/normal/a.png", "sub/.cache/b.jpg", "._a.png"):
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_bytes(encode(picture((64, 64), 2), "PNG"))
    assert sorted(items(list(iter_folder(tmp_path)))) == ["a.png"]
    (tmp_path / "a.png").unlink()
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "train.parquet").write_bytes(b"PAR1")
    with pytest.raises(KoloraError, match=r"holds no images"):
        ingest_to(ingest_config(str(tmp_path)), tmp_path / "out")


def test_files_a_folder_source_does_not_read_are_reported(tmp_path: Path) -> None:
    """A .heic photo, a caption file named otherwise than its image, a metadata.csv in a subfolder were passed over
    without a word: the user's images were missing from training, or kept without their captions. Hidden files, the
    root's metadata, the sidecars read and the upload's _SUCCESS are no news."""
    src = tmp_path / "src"
    for name in ("a.png", "b.png", "sub/c.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(encode(picture((100, 100), ord(name[-5])), "PNG"))
    (src / "metadata.csv").write_text("file_name,text\na.png,from the metadata\n", encoding="utf-8")
    for name in ("a.txt", "b.txt", "IMG_0001.txt", "sub/C.TXT", "sub/metadata.csv", "IMG_0001.heic", "x.parquet"):
        (src / name).write_text("file_name,text\nc.png,a caption\n", encoding="utf-8")
    (src / "_SUCCESS").write_text("{}", encoding="utf-8")
    (src / ".DS_Store").write_bytes(b"Bud1")
    evs = list(iter_folder(src))
    assert items(evs)["b.png"].text == "file_name,text c.png,a caption"  # its sidecar
    assert {e.original_id: e.reason for e in evs if isinstance(e, Problem)} == {
        "a.txt": "the metadata file gives a.png its caption, which comes before a sidecar",
        "IMG_0001.txt": (
            "a caption file with no image of its name beside it (IMG_0001.png, IMG_0001.jpg, ...): name it as its image"
        ),
        "sub/C.TXT": "a caption sidecar is read as C.txt (lower case): rename it",
        "sub/metadata.csv": (
            "metadata files are read at the folder root only: list these images there (file_name relative to the root)"
        ),
        "IMG_0001.heic": (
            "not an image ingest reads (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp): convert it to PNG or JPEG, "
            "or remove it"
        ),
        "x.parquet": (
            "the folder holds images, so it is read as a folder of images: give the .parquet files a folder of their own"
        ),
    }
    assert {e.kind for e in evs if isinstance(e, Problem)} == {"not_read"}
    for name in ("a.png", "b.png", "sub/c.png", "x.parquet", "metadata.csv"):
        (src / name).unlink()
    unread = r"holds no images; 6 other files not used \(6 not_read\), e.g. IMG_0001.heic: not an image ingest reads"
    with pytest.raises(KoloraError, match=unread):
        ingest_to(ingest_config(str(src)), tmp_path / "out")


def test_non_utf8_metadata_is_reported_and_its_captions_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / "metadata.csv").write_bytes("file_name,text\na.png,二次元\n".encode("gbk"))
    evs = list(iter_folder(tmp_path))
    problem = next(e for e in evs if isinstance(e, Problem))
    assert problem.kind == "caption_file_not_utf8" and problem.original_id == "metadata.csv"
    assert "UTF-8" in problem.reason
    assert items(evs)["a.png"].text is None


def test_metadata_without_file_name_column_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / "metadata.csv").write_text("image,text\na.png,x\n", encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    assert any(isinstance(e, Problem) and e.kind == "bad_metadata" and "file_name" in e.reason for e in evs)


@pytest.mark.parametrize(
    ("metadata", "content"),
    [
        ("metadata.csv", "file_name,Caption\na.png,own caption\n"),
        ("metadata.jsonl", '{"file_name": "a.png", "TEXT": "own caption"}\n'),
    ],
)
def test_metadata_caption_column_is_found_whatever_its_case(tmp_path: Path, metadata: str, content: str) -> None:
    """As in a parquet file: `Caption` (a spreadsheet's header) was no caption column, and every image lost its own."""
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / metadata).write_text(content, encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    assert items(evs)["a.png"].text == "own caption" and not [e for e in evs if isinstance(e, Problem)]


def test_metadata_csv_without_a_caption_column_is_a_problem(tmp_path: Path) -> None:
    """It was read as a list of uncaptioned files, silently: each image then a missing_caption with no word why."""
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / "metadata.csv").write_text("file_name,tags\na.png,girl\n", encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    problem = next(e for e in evs if isinstance(e, Problem))
    assert (problem.original_id, problem.kind) == ("metadata.csv", "bad_metadata")
    assert problem.reason == (
        "has no caption column (text, caption, prompt, description, txt) (columns: file_name, tags); its captions are ignored"
    )


def test_a_file_listed_by_both_metadata_files_is_named_with_the_one_used(tmp_path: Path) -> None:
    """Listed once in metadata.csv and once in metadata.jsonl, it was reported as 'lists a.png twice' (in neither)."""
    (tmp_path / "a.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,from the csv\na.png,again\n", encoding="utf-8")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "from the jsonl"}\n', encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    assert items(evs)["a.png"].text == "from the csv"
    assert [(e.original_id, e.reason) for e in evs if isinstance(e, Problem)] == [
        ("metadata.csv:a.png", "lists a.png twice; the first entry is used"),
        ("metadata.jsonl:a.png", "lists a.png, which metadata.csv lists too: that entry is used (keep one metadata file)"),
    ]


def test_metadata_names_match_files_whatever_their_unicode_normal_form(tmp_path: Path) -> None:
    """A file macOS named in NFD (e + combining accent) and a metadata.csv typed in NFC: the image was a missing_caption
    and its row a missing_file, two names that look the same."""
    nfd = unicodedata.normalize("NFD", "café.png")
    (tmp_path / nfd).write_bytes(encode(picture((100, 100), 1), "PNG"))
    (tmp_path / "metadata.csv").write_text(
        f"file_name,text\n{unicodedata.normalize('NFC', 'café.png')},a caption\n", encoding="utf-8"
    )
    evs = list(iter_folder(tmp_path))
    assert [(e.original_id, e.text, e.skip) for e in evs] == [(nfd, "a caption", None)]


def test_metadata_csv_that_csv_cannot_read_is_a_problem_from_that_line(tmp_path: Path) -> None:
    """A caption over csv's field limit (128 KiB) ended the stage with a traceback; the rows before it are read."""
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(encode(picture((100, 100), ord(name[0])), "PNG"))
    huge = "x" * 200_000
    (tmp_path / "metadata.csv").write_text(f'file_name,text\na.png,first\nb.png,"{huge}"\nc.png,third\n', encoding="utf-8")
    evs = list(iter_folder(tmp_path))
    problems = [(e.original_id, e.kind) for e in evs if isinstance(e, Problem)]
    assert problems == [("metadata.csv:3", "bad_metadata")]
    assert "line 3 is not CSV (field larger than field limit" in next(e for e in evs if isinstance(e, Problem)).reason
    assert {n: i.text for n, i in items(evs).items()} == {"a.png": "first", "b.png": None, "c.png": None}


# --- parquet --------------------------------------------------------------------------------------------------


def test_parquet_folder_streams_rows_in_file_order(parquet_dir: Path) -> None:
    source = open_source(ingest_config(str(parquet_dir)))
    assert source.kind == "parquet" and source.label == f"parquet:{parquet_dir.name}"
    got = list(source.events)
    assert [e.original_id for e in got] == [
        "train-00000-of-00002.parquet:0",
        "train-00000-of-00002.parquet:1",
        "train-00000-of-00002.parquet:2",
        "train-00001-of-00002.parquet:0",
        "train-00001-of-00002.parquet:1",
    ]
    assert got[1].text == "row 1 二次元"
    assert Image.open(io.BytesIO(got[2].data)).size == (102, 110)
    assert got[3].data is None and got[3].skip[0] == "empty_file"


def test_single_parquet_file_and_non_parquet_file(parquet_dir: Path, tmp_path: Path) -> None:
    one = parquet_dir / "train-00001-of-00002.parquet"
    assert len(events(str(one))) == 2
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(KoloraError, match=r"not \.parquet"):
        open_source(ingest_config(str(tmp_path / "x.csv")))


def test_hostile_parquet_cells_are_skips_and_damaged_pages_a_problem(tmp_path: Path) -> None:
    """Cells a writer other than datasets' can give: captions that are not text are no caption (they were written out
    as `{'a': 'x'}`, `b'...'`, `['x']`), an image struct whose bytes are a string is not an image (was a TypeError),
    and a page that cannot be decoded ends that file with a problem (was an OSError traceback), earlier rows kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = encode(picture((100, 100), 1), "PNG")
    captions = [5, {"a": "x"}, b"\xff", [["x"]], ["first", "second"], "  two\nlines "]
    (tmp_path / "captions").mkdir()
    for i, caption in enumerate(captions):  # a column each: arrow columns hold one type
        pq.write_table(pa.table({"image": [image], "text": [caption]}), tmp_path / "captions" / f"{i}.parquet")
    assert [e.text for e in events(str(tmp_path / "captions"))] == [None, None, None, None, "first", "two lines"]
    pq.write_table(pa.table({"image": [{"bytes": "not bytes", "path": "x.png"}]}), tmp_path / "b.parquet")
    (event,) = events(str(tmp_path / "b.parquet"))
    assert event.skip == ("not_an_image", "the image cell's bytes field holds str, not binary data")

    buffer = io.BytesIO()
    rows = sources.PARQUET_BATCH_ROWS  # one row group per batch read
    pq.write_table(pa.table({"image": [image] * 2 * rows}), buffer, row_group_size=rows)
    good = pq.ParquetFile(io.BytesIO(buffer.getvalue()))
    second = good.metadata.row_group(1).column(0)
    data = bytearray(buffer.getvalue())
    start = second.dictionary_page_offset or second.data_page_offset
    data[start + 16 : start + 400] = bytes(384)  # the second row group's first page, inside its encoded values
    (tmp_path / "c.parquet").write_bytes(bytes(data))
    got = events(str(tmp_path / "c.parquet"))
    assert [e.original_id for e in got[:-1]] == [f"c.parquet:{i}" for i in range(rows)]
    assert isinstance(got[-1], Problem) and got[-1].kind == "bad_parquet", got[-1]
    assert got[-1].reason.startswith(f"cannot read the parquet file past row {rows} (")


# --- ModelScope (offline) -------------------------------------------------------------------------------------


def test_modelscope_loads_a_local_parquet_through_msdataset(
    parquet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOLORA_DATA_CACHE", str(tmp_path / "cache"))
    pattern = str(parquet_dir / "train-00000-of-00002.parquet")
    got = events(f"modelscope://{pattern}")
    assert [e.original_id for e in got] == ["0", "1", "2"]
    assert [e.text for e in got] == ["row 0 二次元", "row 1 二次元", "row 2 二次元"]
    assert all(Image.open(io.BytesIO(e.data)).width >= 100 for e in got)


def test_modelscope_passes_subset_split_revision_and_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelscope.msdatasets import MsDataset

    calls = []

    def fake_load(dataset_name, **kwargs):
        calls.append((dataset_name, kwargs))
        return MsDataset(hf_dataset(hf_rows(2, with_text=False)))

    monkeypatch.setattr(MsDataset, "load", staticmethod(fake_load))
    monkeypatch.setenv("KOLORA_DATA_CACHE", str(tmp_path / "ms"))
    config = ingest_config("modelscope://AI-ModelScope/lowres_anime", subset="default", split="train", revision="v1.0")
    source = open_source(config)
    assert source.label == "modelscope://AI-ModelScope/lowres_anime"
    got = list(source.events)
    assert calls == [
        (
            "AI-ModelScope/lowres_anime",
            {"subset_name": "default", "split": "train", "cache_dir": str(tmp_path / "ms"), "version": "v1.0"},
        )
    ]
    assert [e.original_id for e in got] == ["0", "1"] and all(e.text is None and e.data for e in got)


def test_unreachable_hub_is_one_line_naming_the_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from modelscope.msdatasets import MsDataset

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.modelscope.cn'\nretrying")

    monkeypatch.setattr(MsDataset, "load", staticmethod(offline))
    monkeypatch.setenv("KOLORA_DATA_CACHE", str(tmp_path))
    with pytest.raises(KoloraError) as caught:
        events("modelscope://AI-ModelScope/lowres_anime")
    message = str(caught.value)
    assert "\n" not in message
    assert "modelscope://AI-ModelScope/lowres_anime" in message and "split train" in message and "ConnectionError" in message


def test_multi_split_result_asks_for_a_split() -> None:
    with pytest.raises(KoloraError, match=r"ingest\.split"):
        list(sources.iter_hf_rows({"train": None, "test": None}, "modelscope://x"))


# --- smoke:// and bad URIs ------------------------------------------------------------------------------------


def test_smoke_is_deterministic_and_has_droppable_images() -> None:
    first = list(smoke_items(16))
    assert first == list(smoke_items(16))
    kinds = [smoke_kind(i) for i in range(16)]
    assert kinds.count("too_small") == 2 and kinds.count("too_wide") == 2
    for i, (_, data, _) in enumerate(first):
        w, h = Image.open(io.BytesIO(data)).size
        assert (w, h) == smoke_size(i)
        if kinds[i] == "ok":
            assert 96 <= w <= 160 and 96 <= h <= 160
        elif kinds[i] == "too_small":
            assert max(w, h) < 96
        else:
            assert min(w, h) >= 96 and w / h > 2.0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("s3://bucket/images", "unsupported scheme"),
        ("/nonexistent/kolora/images", "/nonexistent/kolora/images does not exist"),
        ("modelscope://", "needs a dataset id"),
    ],
)
def test_bad_sources_fail_with_one_line(source: str, message: str) -> None:
    with pytest.raises(KoloraError, match=message):
        open_source(ingest_config(source))


def test_decoded_pil_cells_and_path_cells_inside_the_dataset_cache_are_read(tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(encode(picture((100, 100), 1), "PNG"))
    rows = [{"image": picture((101, 100), 2)}, {"image": str(tmp_path / "p.png")}, {"image": str(tmp_path / "gone.png")}]
    got = list(sources.iter_hf_rows(ListDataset(rows), "x", (tmp_path,)))
    assert Image.open(io.BytesIO(got[0].data)).size == (101, 100)
    assert got[1].data == (tmp_path / "p.png").read_bytes()
    assert got[2].skip[0] == "missing_file"
    without_roots = list(sources.iter_hf_rows(ListDataset(rows), "x"))
    assert without_roots[0].data and [e.skip[0] for e in without_roots[1:]] == ["no_image_bytes", "no_image_bytes"]


class ListDataset(list):
    """What a streaming dataset without features looks like: rows only."""

    column_names = ("image",)
    features = None
