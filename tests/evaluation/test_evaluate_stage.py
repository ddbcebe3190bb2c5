"""The evaluate stage: the seed's grid order and size, shard merging, an honest report and gate."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from jobs.evaluate import main as evaluate_main
from kolora_core.config import EvaluateConfig
from kolora_core.evaluation.grid import story_grid
from kolora_core.inference.story import image_name
from kolora_core.lora.format import save_lora
from kolora_core.models.layout import MANIFEST
from kolora_core.models.scorers import CLIP, ScorersDir
from kolora_core.stages import COMPLETE_MARKER
from tests.conftest import COLOURS, mark_complete, no_champion, write_story_images
from tests.evaluation.conftest import shard_weights
from tests.models.broken_index import break_index


@pytest.fixture
def stage_inputs(tmp_path: Path, scorers_dir: Path) -> dict[str, Path]:
    import torch

    lora = tmp_path / "lora"
    lora.mkdir()
    save_lora(
        lora / "lora.safetensors",
        {"m.lora_A.default.weight": torch.zeros(16, 4), "m.lora_B.default.weight": torch.zeros(4, 16)},
        rank=16,
        alpha=4.0,
        extra={},
    )
    (lora / "train_summary.json").write_text(json.dumps({"steps": 4, "final_loss": 0.5}))
    report = tmp_path / "fr"
    report.mkdir()
    (report / "filter_report.json").write_text(json.dumps({"images_in": 16, "kept": 11, "dropped": 5, "per_op": []}))
    return {
        "lora": mark_complete(lora),
        "filter-report": mark_complete(report),
        "images": write_story_images(tmp_path / "images", shards=3, lora=lora),
        "scorers": scorers_dir,
        "champion": no_champion(tmp_path / "champion"),
    }


def _run(inputs: dict[str, Path], out: Path, *extra: str) -> int:
    argv = ["--profile", "smoke", "--report", str(out), *extra]
    for name, path in inputs.items():
        argv += [f"--{name}", str(path)]
    return evaluate_main(argv)


def test_grid_is_the_seeds_layout_from_merged_shards(stage_inputs: dict[str, Path], tmp_path: Path) -> None:
    assert _run(stage_inputs, tmp_path / "out") == 0
    grid = Image.open(tmp_path / "out" / "grid.png").convert("RGB")
    assert grid.size == (128, 256)  # smoke profile's grid_width x grid_height
    cell_w, cell_h = 64, 64
    for index, colour in enumerate(COLOURS):  # 2 per row, 4 rows, story order
        row, col = divmod(index, 2)
        assert grid.getpixel((col * cell_w + cell_w // 2, row * cell_h + cell_h // 2)) == colour


def test_report_and_gate_are_honest(stage_inputs: dict[str, Path], tmp_path: Path) -> None:
    """No scorer configured (the scorers input holds both: the config decides): nothing scored, the gate skipped."""
    assert _run(stage_inputs, tmp_path / "out", "--evaluate.aesthetic_repo", "null", "--evaluate.clip_repo", "null") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert [i["index"] for i in report["images"]] == list(range(8))
    assert report["images"][2]["prompt"] == "p2"
    assert report["images"][0]["mean"] == pytest.approx(85 * 56 / 64, abs=0.01)  # red, with a black bar on top
    assert report["data"] == {"images_in": 16, "kept": 11, "dropped": 5}
    assert report["training"]["rank"] == 16 and report["training"]["final_loss"] == 0.5
    assert report["gate"]["result"] == "skipped" and "evaluate.aesthetic_repo is null" in report["gate"]["reason"]
    assert report["gate"]["mean_aesthetic"] is None and report["images"][0]["aesthetic"] is None  # nothing invented
    assert report["scores"]["aesthetic"]["status"] == report["scores"]["clip_similarity"]["status"] == "skipped"
    assert report["scores"]["clip_similarity"]["reason"] == "evaluate.clip_repo is null: not scored"
    assert report["scorers"]["aesthetic"] is None and report["scorers"]["clip"] is None
    assert report["settings"]["cfg_scale"] == 4 and report["images"][3]["steps"] == 4
    assert (tmp_path / "out" / "gate.txt").read_text().strip() == "skipped"
    assert (tmp_path / "out" / "mean_aesthetic.txt").read_text() == ""  # not scored: the metric has no value
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "gate: skipped" in page and "scoring skipped: evaluate.aesthetic_repo is null" in page
    assert page.count('<figure class="card') == 8 and "p7" in page and page.count("data:image/jpeg;base64,") == 9
    assert "<script" not in page and "http" not in page  # self-contained: opens offline, nothing fetched


def test_images_of_another_lora_are_refused(
    stage_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another run's story beside this LoRA would be scored (and pass a gate) as this LoRA's: each record names the
    LoRA file it was rendered with."""
    other = tmp_path / "other-images"
    write_story_images(other, shards=3)  # rendered with another LoRA file
    assert _run({**stage_inputs, "images": other}, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(r": 000\.png was rendered with LoRA a{12}, not --lora's [0-9a-f]{12}: pass the images", err[-1])
    assert not (tmp_path / "out" / "report.json").exists()


def test_missing_shard_is_an_error(stage_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = stage_inputs["images"] / "shard-2"
    for path in shard.iterdir():
        path.unlink()
    shard.rmdir()
    assert _run(stage_inputs, tmp_path / "out") == 2
    assert "holds 6 images, the story has 8" in capsys.readouterr().err


def test_a_scorers_index_naming_a_file_outside_it_is_one_line(
    stage_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scorers artifact whose CLIP index names a shard outside it, the manifest rewritten to match (both come
    through the artifact store): exit 2 and one line naming the index, not a CLIP loaded from another folder."""
    scorers = Path(shutil.copytree(stage_inputs["scorers"], tmp_path / "scorers"))
    message = break_index(shard_weights(scorers / CLIP), "outside", tmp_path)
    manifest = json.loads((scorers / MANIFEST).read_text(encoding="utf-8"))
    ScorersDir(scorers).write_manifest(manifest["kind"], manifest["sources"])
    assert _run({**stage_inputs, "scorers": mark_complete(scorers)}, tmp_path / "out") == 2
    assert re.match(message, capsys.readouterr().err.strip().splitlines()[-1].removeprefix("kolora evaluate: error: "))
    assert not (tmp_path / "out" / "report.json").exists()


def _rewrite_first_record(shard: Path, change) -> None:
    manifest = shard / "generations.jsonl"
    lines = manifest.read_bytes().splitlines()
    lines[0] = change(lines[0])
    manifest.write_bytes(b"\n".join(lines) + b"\n")


def _with_file(name: str):
    def change(line: bytes) -> bytes:
        record = json.loads(line)
        record["file"] = name
        return json.dumps(record).encode()

    return change


def _without_prompt(line: bytes) -> bytes:
    record = json.loads(line)
    del record["prompt"]
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("escape", r"line 1: file '\.\./\.\./outside\.png' is not a plain file name beside the manifest"),
        ("absolute", r"line 1: file '/etc/passwd' is not a plain file name beside the manifest"),
        ("nul", r"line 1: file '000\.png\\x00' is not a plain file name beside the manifest"),  # was a ValueError
        ("symlink", r"input --images: .*evil\.png is a symbolic link; committed outputs hold plain files"),
        ("not utf-8", r"line 1 is not a generation record \(UnicodeDecodeError"),
        ("no prompt", r"line 1 is not a generation record \(KeyError: 'prompt'\)"),
        ("corrupt png", r"generated image .*000\.png cannot be read \(UnidentifiedImageError"),
    ],
)
def test_generations_from_the_bucket_are_checked(
    stage_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    """generations.jsonl names its images; on Argo it comes from the bucket, so a name outside its shard is never opened.
    Each case was a traceback (or, for the escape, a read of a file outside the images artifact)."""
    shard = stage_inputs["images"] / "shard-0"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "outside.png")  # would pass for a generated image
    if damage == "escape":
        _rewrite_first_record(shard, _with_file("../../outside.png"))
    elif damage == "absolute":
        _rewrite_first_record(shard, _with_file("/etc/passwd"))
    elif damage == "nul":
        _rewrite_first_record(shard, _with_file("000.png\0"))
    elif damage == "symlink":  # a plain name, but a link out of the shard (listed: whoever writes the bucket writes _SUCCESS)
        (shard / "evil.png").symlink_to(tmp_path / "outside.png")
        _rewrite_first_record(shard, _with_file("evil.png"))
        marker = json.loads((shard / COMPLETE_MARKER).read_text())
        (shard / COMPLETE_MARKER).write_text(json.dumps(marker | {"files": [*marker["files"], "evil.png"]}))
    elif damage == "not utf-8":
        _rewrite_first_record(shard, lambda line: line.replace(b'"p0"', '"café"'.encode("latin-1")))
    elif damage == "no prompt":
        _rewrite_first_record(shard, _without_prompt)
    else:
        (shard / image_name(0)).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert _run(stage_inputs, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]), err[-1]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("summary not json", r"lora/train_summary\.json is not valid JSON: Expecting property name"),
        ("summary a list", r"lora/train_summary\.json must hold a JSON object"),
        ("report not json", r"fr/filter_report\.json is not valid JSON: Expecting property name"),
        ("report missing", r"fr/filter_report\.json is missing: pass the filter stage's filter-report directory"),
    ],
)
def test_damaged_training_and_filter_facts_are_one_line(
    stage_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    """The report's facts come from the lora and filter-report artifacts (the bucket on Argo); each case was a
    traceback, exit 1 (JSONDecodeError, TypeError from `dict |= list`, FileNotFoundError)."""
    summary, report = stage_inputs["lora"] / "train_summary.json", stage_inputs["filter-report"] / "filter_report.json"
    if damage == "report missing":
        report.unlink()
        mark_complete(report.parent)
    else:
        (summary if damage.startswith("summary") else report).write_text("[1]" if damage == "summary a list" else "{no")
    assert _run(stage_inputs, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]), err[-1]
    assert not (tmp_path / "out" / COMPLETE_MARKER).exists()


def test_a_taller_grid_keeps_the_images_square(stage_inputs: dict[str, Path], tmp_path: Path) -> None:
    """16 prompts need `grid_rows: 8`; the grid fitted to grid_width x grid_height (made for the seed's 2x4) had
    squashed every image to half its height. Now the grid keeps its shape: 2x8 cells of 64 px fit 128x256 as 64x256."""
    assert _run(stage_inputs, tmp_path / "out", "--evaluate.grid_rows", "8") == 0
    grid = Image.open(tmp_path / "out" / "grid.png").convert("RGB")
    assert grid.size == (64, 256)
    for index, colour in enumerate(COLOURS):
        row, col = divmod(index, 2)
        assert grid.getpixel((col * 32 + 16, row * 32 + 20)) == colour  # below the black bar (the top 4 of 32 px)
        assert max(grid.getpixel((col * 32 + 16, row * 32 + 1))) < 16  # the bar, not stretched over half the cell


def test_images_of_other_sizes_are_fitted_not_stretched() -> None:
    """A story of mixed sizes (per-prompt `size:`): cells were the first image's size, a square image stretched into
    a wide cell. Now a cell holds the largest image and each image keeps its aspect ratio, centred on black."""
    wide, square = Image.new("RGB", (128, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 255, 0))
    grid = story_grid([wide, square], EvaluateConfig(grid_columns=2, grid_rows=1, grid_width=256, grid_height=64))
    assert grid.size == (256, 64)
    assert grid.getpixel((2, 32)) == grid.getpixel((125, 32)) == (255, 0, 0)  # the wide image fills its cell
    assert grid.getpixel((130, 32)) == grid.getpixel((253, 32)) == (0, 0, 0)  # the square one does not: bars beside it
    assert grid.getpixel((192, 32)) == (0, 255, 0)
