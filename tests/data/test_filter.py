"""The filter stage with real Data-Juicer runs (one per scenario, shared through module fixtures) and its checks.

Data-Juicer runs: the smoke dataset end to end through both CLIs, a rerun after a simulated crash, the bad-kinds
folder, and an empty result. Everything else here (accounting, reasons, missing dependencies) needs no run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jobs.filter import main as filter_main
from jobs.ingest import main as ingest_main
from kolora_core.config.datajuicer_ops import datajuicer_ops
from kolora_core.data import datajuicer
from kolora_core.data.datajuicer import DJResult
from kolora_core.data.filter_report import explain_drop
from kolora_core.data.filtering import VERIFY_OP, account, verify_records
from kolora_core.data.ingest import ingest_to
from kolora_core.data.layout import DATAJUICER_LOG, INGEST_REPORT, Record, read_records, write_json
from kolora_core.data.smoke import smoke_kind
from kolora_core.errors import KoloraError
from kolora_core.stages import COMPLETE_MARKER
from tests.conftest import mark_complete
from tests.data.conftest import PIXEL_DAMAGE, damage_pixels, encode, ingest_config, picture


def filter_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--profile",
        "smoke",
        "--dataset",
        str(dataset),
        "--trainset",
        str(out / "trainset"),
        "--filter-report",
        str(out / "report"),
        *extra,
    ]


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smoke-run")
    assert ingest_main(["--profile", "smoke", "--dataset", str(root / "dataset")]) == 0
    assert filter_main(filter_args(root / "dataset", root)) == 0
    return root


@pytest.fixture(scope="module")
def smoke_report(smoke: Path) -> dict:
    return json.loads((smoke / "report" / "filter_report.json").read_text(encoding="utf-8"))


def test_smoke_counts_and_per_op_table(smoke_report: dict) -> None:
    assert (smoke_report["images_in"], smoke_report["kept"], smoke_report["dropped"]) == (16, 12, 4)
    assert all(isinstance(smoke_report[k], int) for k in ("images_in", "kept", "dropped"))
    assert smoke_report["dropped_by_op"] == {"image_shape_filter": 2, "image_aspect_ratio_filter": 2}
    assert [(o["op"], o["images_in"], o["dropped"], o["images_out"]) for o in smoke_report["ops"]] == [
        ("kolora_verify", 16, 0, 16),
        ("image_shape_filter", 16, 2, 14),
        ("image_aspect_ratio_filter", 14, 2, 12),
    ]


def test_each_drop_is_explained_by_data_juicer_stats(smoke_report: dict) -> None:
    expected_op = {"too_small": "image_shape_filter", "too_wide": "image_aspect_ratio_filter"}
    for drop in smoke_report["dropped_images"]:
        index = int(drop["original_id"].removeprefix("smoke-"))
        assert drop["op"] == expected_op[smoke_kind(index)]
        if drop["op"] == "image_shape_filter":
            assert drop["stats"]["image_width"] == drop["width"] < 96
            assert re.fullmatch(r"width \d+ px < min_width 96; height \d+ px < min_height 96", drop["reason"])
        else:
            assert drop["stats"]["aspect_ratios"] > 2.0
            assert re.fullmatch(r"aspect ratio \(w/h\) 2\.\d+ > max_ratio 2", drop["reason"])


def test_trainset_is_diffsynth_layout(smoke: Path, smoke_report: dict) -> None:
    train = smoke / "trainset" / "train"
    metadata = pd.read_csv(train / "metadata.csv")  # what DiffSynth's TextImageDataset does
    assert list(metadata.columns) == ["file_name", "text"]
    assert list(metadata["file_name"]) == [f"{i}.png" for i in range(12)]
    assert set(metadata["text"]) == {"二次元"}
    assert not (train / "metadata.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # utf-8, no BOM
    assert sorted(p.name for p in train.iterdir()) == sorted([*metadata["file_name"], "metadata.csv"])
    dataset = {r.id: r for r in read_records(smoke / "dataset")}
    for kept in smoke_report["kept_images"]:
        with Image.open(smoke / "trainset" / kept["file_name"]) as im:
            assert im.size == (kept["width"], kept["height"]) and min(im.size) >= 96 and 0.5 <= im.width / im.height <= 2.0
        assert hashlib.sha256((smoke / "trainset" / kept["file_name"]).read_bytes()).hexdigest() == dataset[kept["id"]].sha256
    order = [r.id for r in read_records(smoke / "dataset") if r.id in {k["id"] for k in smoke_report["kept_images"]}]
    assert [k["id"] for k in smoke_report["kept_images"]] == order  # dataset order


def test_reports_hold_no_absolute_paths_and_html_is_self_contained(smoke: Path, smoke_report: dict) -> None:
    for out in ("trainset", "report"):
        for name, data in tree(smoke / out).items():
            if name.endswith((".json", ".csv", ".html")):
                text = data.decode("utf-8")
                assert str(smoke) not in text and "/tmp" not in text, name
    dj_log = (smoke / "report" / DATAJUICER_LOG).read_text(encoding="utf-8")
    assert "OP [image_shape_filter] Done" in dj_log  # Data-Juicer's own log, kept
    assert str(smoke) not in dj_log and "kolora-dj-" not in dj_log  # its work and image dirs by name only
    assert "\r" not in dj_log  # progress-bar updates on lines of their own
    page = (smoke / "report" / "filter_report.html").read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") == 16
    assert not re.search(r'(src|href)="(?!data:)', page)
    for needle in ("16 in", "12 kept", "4 dropped", "image_shape_filter", "width &lt; min_width 96", "<svg"):
        assert needle in page
    assert smoke_report["histograms"]["width"]["kept"] and sum(smoke_report["histograms"]["width"]["dropped"]) == 4
    assert smoke_report["dimensions"]["kept"]["width"]["min"] >= 96
    assert smoke_report["ingest"]["images_read"] == 16


def test_rerun_after_a_crash_writes_the_same_files(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "rerun"
    (out / ".staging" / "trainset" / "train").mkdir(parents=True)  # what a crashed run leaves behind
    (out / ".staging" / "trainset" / "train" / "99.png").write_bytes(b"half")
    assert filter_main(filter_args(smoke / "dataset", out)) == 0
    assert tree(out / "trainset") == tree(smoke / "trainset")
    rerun, first = tree(out / "report"), tree(smoke / "report")
    assert rerun.pop(DATAJUICER_LOG) and first.pop(DATAJUICER_LOG)  # a log records when: kept, not compared
    assert rerun == first


def test_empty_result_names_the_op_and_the_sizes(smoke: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ops = "[{image_shape_filter: {min_width: 1024, min_height: 1024}}, {image_aspect_ratio_filter: {max_ratio: 2.0}}]"
    code = filter_main(filter_args(smoke / "dataset", tmp_path, "--filter.ops", ops))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("kolora filter: error: image_shape_filter removed all 16 images: width ")
    assert "vs min_width 1024" in last and "(median " in last and "filter.ops" in last
    assert not (tmp_path / "trainset" / COMPLETE_MARKER).exists()


def test_an_unknown_op_is_refused_before_data_juicer_runs(smoke: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It used to end at Data-Juicer's preflight, after the stage had verified every image; now the config refuses it."""
    code = filter_main(filter_args(smoke / "dataset", tmp_path, "--filter.ops", "[{image_shap_filter: {min_width: 10}}]"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "kolora filter: error: command-line flags: config field 'filter.ops[0]': 'image_shap_filter' is not a Data-Juicer "
        f"{datajuicer_ops().version} op (did you mean image_shape_filter, image_size_filter, image_nsfw_filter?)"
    ]
    assert not (tmp_path / "report").exists() and not (tmp_path / "trainset").exists(), "refused before the stage started"


def test_a_recipe_data_juicers_preflight_refuses_ends_with_its_cause(
    smoke: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """The one-line error used to end at Data-Juicer's "errors detected:", the cause only in the log above it,
    and after ~40 ERROR lines of its config table and traceback (kept in its datajuicer.log only). The config checks
    names only: a value of the wrong type is Data-Juicer's to refuse."""
    code = filter_main(filter_args(smoke / "dataset", tmp_path, "--filter.ops", "[{image_shape_filter: {min_width: wide}}]"))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert not [r for r in caplog.records if r.getMessage().startswith("datajuicer: ")]
    assert last.startswith("kolora filter: error: Data-Juicer failed (exit 1) after ")
    assert "Parameter 'min_width' expects type 'int', got 'str' (value: 'wide')" in last
    assert last.endswith("; fix filter.ops") and "strict_preflight" not in last


def fail_child(monkeypatch: pytest.MonkeyPatch, *lines: str) -> None:
    """Data-Juicer's child replaced by one that writes `lines` to its log and exits 1."""

    def child(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, roots: dict[str, str]) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return 1

    monkeypatch.setattr(datajuicer, "_run_child", child)
    monkeypatch.setattr(datajuicer, "check_environment", lambda ops: None)


def test_a_failure_without_a_cause_repeats_the_logs_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fail_child(monkeypatch, "loading the dataset", "Segmentation fault")
    samples = [datajuicer.Sample("1", "a", tmp_path / "1.png")]
    with pytest.raises(KoloraError, match=r"^Data-Juicer failed \(exit 1\) after \d+ s: exit code 1$"):
        datajuicer.run_datajuicer(samples, [], 1, tmp_path / "work", tmp_path / "dj.log")
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "datajuicer: loading the dataset",
        "datajuicer: Segmentation fault",
    ]


# --- a dataset holding every bad kind, plus an image corrupted after ingest -------------------------------------


@pytest.fixture(scope="module")
def bad_run(bad_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bad-run")
    dataset = root / "dataset"
    dataset.mkdir()
    write_json(dataset / INGEST_REPORT, ingest_to(ingest_config(str(bad_folder), caption=None, trigger_word="kol"), dataset))
    mark_complete(dataset)
    cmyk = next(r for r in read_records(dataset) if r.original_id == "cmyk.jpg")
    (dataset / cmyk.image).write_bytes((dataset / cmyk.image).read_bytes()[:200])  # damaged after ingest
    assert filter_main(filter_args(dataset, root)) == 0
    return root, json.loads((root / "report" / "filter_report.json").read_text(encoding="utf-8"))


def test_bad_kinds_kept_set_and_reasons(bad_run: tuple[Path, dict]) -> None:
    root, report = bad_run
    kept = [k["original_id"] for k in report["kept_images"]]
    assert kept == ["good_a.png", "good_b.jpg", "gray16.png", "la.png", "palette.gif", "rotated.jpg", "sub/good_c.png"]
    drops = {d["original_id"]: (d["op"], d["rule"]) for d in report["dropped_images"]}
    assert drops == {
        "cmyk.jpg": ("kolora_verify", "sha256 mismatch"),
        "small.png": ("image_shape_filter", "width < min_width 96; height < min_height 96"),
        "wide.png": ("image_aspect_ratio_filter", "aspect ratio (w/h) > max_ratio 2"),
    }
    assert (report["images_in"], report["kept"], report["dropped"]) == (10, 7, 3)
    skips = {s["original_id"]: s["kind"] for s in report["ingest"]["skips"]}
    assert skips["bomb.png"] == "too_large" and skips["gbk.txt"] == "caption_file_not_utf8" and len(skips) == 11
    metadata = pd.read_csv(root / "trainset" / "train" / "metadata.csv")
    assert metadata["text"].tolist()[-1] == "kol, a sidecar caption"
    assert metadata["text"].tolist()[0] == "kol, caption of good_a.png, 二次元"


# --- no Data-Juicer run needed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", PIXEL_DAMAGE)
def test_a_png_whose_pixel_data_is_damaged_is_not_handed_to_data_juicer(tmp_path: Path, damage: str) -> None:
    """Records from the bucket that match a damaged PNG (valid CRCs, sha256 and size as recorded) passed verify() and
    went to Data-Juicer, which reads them with truncated loading on: black or grey pixels into the trainset."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes(encode(picture((96, 112), i), "PNG"))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    ingest_to(ingest_config(str(folder), caption="a picture"), dataset)
    good, bad = read_records(dataset)
    (dataset / bad.image).write_bytes(damage_pixels((dataset / bad.image).read_bytes(), damage))
    bad = Record(**{**asdict(bad), "sha256": hashlib.sha256((dataset / bad.image).read_bytes()).hexdigest()})
    verified, rejected = verify_records(dataset, [good, bad])
    assert verified == [good]
    assert [(d.record, d.op, d.rule) for d in rejected] == [(bad, VERIFY_OP, "unreadable image")]
    assert rejected[0].reason.startswith(f"{bad.image}: cannot decode: ")


def test_missing_input_dir_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope"
    assert filter_main(filter_args(missing, tmp_path)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("kolora filter: error: input --dataset") and str(missing) in last


def test_missing_ray_fails_before_data_juicer_can_pip_install(
    smoke: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_find_spec = datajuicer.importlib.util.find_spec
    monkeypatch.setattr(datajuicer.importlib.util, "find_spec", lambda name: None if name == "ray" else real_find_spec(name))
    monkeypatch.setattr(datajuicer.subprocess, "run", lambda *a, **k: pytest.fail("Data-Juicer must not start"))
    assert filter_main(filter_args(smoke / "dataset", tmp_path)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs ray installed" in last and "pip install ray" in last


def test_optional_op_packages_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = datajuicer.importlib.util.find_spec
    monkeypatch.setattr(
        datajuicer.importlib.util, "find_spec", lambda name: None if name == "imagededup" else real_find_spec(name)
    )
    with pytest.raises(KoloraError, match=r"imagededup installed \(needed by image_deduplicator\)"):
        datajuicer.check_environment([{"image_deduplicator": {}}])


def records(n: int) -> list[Record]:
    return [Record(f"id{i}", "t", f"images/id{i}.png", "test", f"o{i}", f"id{i}" + "0" * 60, 100, 100) for i in range(n)]


def test_unexplained_drops_fail_the_stage() -> None:
    """Data-Juicer's poisoned batch: output shorter than input, no trace, exit 0."""
    result = DJResult(kept=[], dropped={}, error_lines=["| ERROR | An error occurred in image_shape_filter ..."], seconds=1.0)
    with pytest.raises(KoloraError, match=r"4 images vanished.*An error occurred in image_shape_filter"):
        account(records(4), result, [{"image_shape_filter": {}}])


def test_deduplicator_drops_are_attributed_to_it() -> None:
    rows = [{"id": "id0", "text": "t", "image": []}, {"id": "id2", "text": "t", "image": []}]
    result = DJResult(
        kept=rows, dropped={"image_shape_filter": [{"id": "id3", "stats": {"image_width": [5]}}]}, error_lines=[], seconds=1.0
    )
    outcome = account(records(4), result, [{"image_shape_filter": {"min_width": 10}}, {"image_deduplicator": {}}])
    assert [(d.record.id, d.op) for d in outcome.drops] == [("id1", "image_deduplicator"), ("id3", "image_shape_filter")]
    assert [(o["op"], o["images_in"], o["images_out"]) for o in outcome.ops] == [
        ("image_shape_filter", 4, 3),
        ("image_deduplicator", 3, 2),
    ]


def test_rows_data_juicer_was_not_given_are_refused() -> None:
    result = DJResult(kept=[{"id": "new", "text": "t", "image": []}], dropped={}, error_lines=[], seconds=1.0)
    with pytest.raises(KoloraError, match="ids it was not given"):
        account(records(1), result, [])


@pytest.mark.parametrize(
    ("op", "args", "stats", "reason"),
    [
        (
            "image_shape_filter",
            {"min_width": 1024},
            {"image_width": [512], "image_height": [2048]},
            "width 512 px < min_width 1024",
        ),
        ("image_aspect_ratio_filter", {}, {"aspect_ratios": [0.25]}, "aspect ratio (w/h) 0.25 < min_ratio 0.333"),
        (
            "image_aesthetics_filter",
            {"min_score": 0.6},
            {"image_aesthetics_scores": [0.41]},
            "aesthetic score 0.41 < min_score 0.6",
        ),
        ("image_nsfw_filter", {}, {"image_nsfw_score": [0.9]}, "NSFW score 0.9 > max_score 0.5"),
        ("some_new_filter", {"k": 1}, {"s": [3]}, "s=3 (limits: k=1)"),
    ],
)
def test_explain_drop(op: str, args: dict, stats: dict, reason: str) -> None:
    assert explain_drop(op, args, stats)[1] == reason


@pytest.mark.skipif(not os.environ.get("KOLORA_TEST_RAY"), reason="starts a local Ray (~40 s on 2 cores); set KOLORA_TEST_RAY=1")
def test_ray_executor_gives_the_same_result(smoke: Path, tmp_path: Path) -> None:
    from kolora_core.config import load_config

    verified = list(read_records(smoke / "dataset"))
    samples = [datajuicer.Sample(r.id, r.text, (smoke / "dataset" / r.image).resolve()) for r in verified]
    ops = load_config("smoke").filter.ops
    result = datajuicer.run_datajuicer(samples, ops, 2, tmp_path, tmp_path / "dj.log", executor_type="ray", ray_address="local")
    outcome = account(verified, result, ops)
    report = json.loads((smoke / "report" / "filter_report.json").read_text(encoding="utf-8"))
    assert [row["id"] for row in outcome.kept_rows] == [k["id"] for k in report["kept_images"]]
    assert sorted((d.record.id, d.op) for d in outcome.drops) == sorted((d["id"], d["op"]) for d in report["dropped_images"])


def test_datajuicer_progress_is_surfaced_as_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Lines as Data-Juicer 1.6.1 prints them (its loguru op summary, the datasets map bars of an op)."""
    progress = datajuicer._DJProgress(every_s=0)
    with caplog.at_level("INFO", logger="kolora.filter"):
        for line in (
            "image_shape_filter_compute_stats (num_proc=2):  50%|#####     | 20/40 [00:00<00:00, 102.60 examples/s]",
            "image_shape_filter_compute_stats (num_proc=2): 100%|##########| 40/40 [00:00<00:00, 98.74 examples/s]",
            "2026-12-01 11:50:08.753 | INFO     | data_juicer.core.data.dj_dataset:310 - [1/1] OP [image_shape_filter] "
            "Done in 1.089s. Left 23 samples.",
            "2026-12-01 11:50:06.084 | INFO     | data_juicer.core.executor.default_executor:71 - Setting up dataset builder...",
        ):
            progress.see(line)
    assert [r.getMessage() for r in caplog.records] == [
        "filter: Data-Juicer image_shape_filter_compute_stats: 20/40 images",
        "filter: Data-Juicer image_shape_filter done in 1.089 s, 23 images left",
    ]


def test_bucket_histogram_in_the_report_with_train_buckets(smoke: Path, smoke_report: dict, tmp_path: Path) -> None:
    """With train.buckets the report says how the kept images will be bucketed; without, it says nothing of buckets."""
    from kolora_core.data.buckets import bucket_histogram

    assert "buckets" not in smoke_report
    out = tmp_path / "buckets"
    assert filter_main(filter_args(smoke / "dataset", out, "--train.buckets", "true", "--train.resolution", "128")) == 0
    report = json.loads((out / "report" / "filter_report.json").read_text(encoding="utf-8"))
    sizes = [(k["width"], k["height"]) for k in report["kept_images"]]
    assert report["buckets"] == bucket_histogram(sizes, 128) and sum(report["buckets"].values()) == report["kept"]
    assert "Aspect-ratio buckets" in (out / "report" / "filter_report.html").read_text(encoding="utf-8")


def _record_with(**fields: object) -> bytes:
    """A dataset line, as ingest writes it, with `fields` changed."""
    good = asdict(Record("b" * 16, "t", "images/b.png", "smoke://", "1", "b" * 64, 8, 8))
    return json.dumps(good | fields).encode() + b"\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "caf\xe9"}\n'.encode("latin-1"), "line 2 is not a dataset record: 'utf-8' codec can't decode byte 0xe9"),
        (b"[1, 2]\n", "line 2 is not a dataset record: a JSON list, not an object"),
        (_record_with(text=5), "line 2 is not a dataset record: field 'text' is 5, not text; rerun the ingest stage"),
        (_record_with(text=None), "line 2 is not a dataset record: field 'text' is null, not text"),
        (_record_with(image=5), "line 2 is not a dataset record: field 'image' is 5, not text"),
        (_record_with(id=["a"]), "line 2 is not a dataset record: field 'id' is [\"a\"], not text"),
        (_record_with(width="8"), "line 2 is not a dataset record: field 'width' is \"8\", not an integer"),
        (_record_with(height=True), "line 2 is not a dataset record: field 'height' is true, not an integer"),
    ],
)
def test_a_dataset_line_that_is_not_a_record_is_named(tmp_path: Path, line: bytes, message: str) -> None:
    """Each was a traceback (UnicodeDecodeError, AttributeError on a caption 5 or null, TypeError on an image path 5,
    an id list, a width "8"): the dataset comes from the bucket on Argo."""
    good = Record("a" * 16, "t", "images/a.png", "smoke://", "0", "a" * 64, 8, 8).to_json().encode() + b"\n"
    (tmp_path / "dataset.jsonl").write_bytes(good + line)
    with pytest.raises(KoloraError, match=re.escape(message)):
        list(read_records(tmp_path))
