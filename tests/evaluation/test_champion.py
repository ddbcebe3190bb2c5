"""The champion rule: the candidate against the promoted release of the same story, scores read or re-scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import kolora_core.evaluation.run as evaluate_run
from jobs.evaluate import main as evaluate_main
from kolora_core.evaluation.champion import scorer_identity, story_difference
from kolora_core.evaluation.gate import champion_rule
from kolora_core.evaluation.scoring import Scorers
from kolora_core.inference.story import Generation, image_name, save_generation
from tests.conftest import mark_complete
from tests.evaluation.test_evaluate_stage import stage_inputs  # noqa: F401 - the fixture is used by name
from tests.evaluation.test_gate import FakeAesthetic, FakeClip

IDENTITY = "scorers-manifest-sha"  # the scorer identity the fakes below claim


def write_champion(root: Path, scores: list[float] | None, identity: str = IDENTITY, prompt_3: str = "p3") -> Path:
    """A champion dir as `kolora champion` leaves it: pointer, report (with per-image scores), grid, story images."""
    images = root / "images"
    images.mkdir(parents=True)
    for index in range(8):
        record = Generation(
            index=index, file=image_name(index), prompt=prompt_3 if index == 3 else f"p{index}", negative_prompt="",
            seed=index, cfg_scale=4, steps=4, width=64, height=64, lora_strength=1, lora_scale=0.25,
            lora_sha256="c" * 64, base_model_sha256="b" * 64, seconds=0.1,
        )  # fmt: skip
        image = Image.new("RGB", (64, 64), (20 * index, 200, 90))
        ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=(250, 250, 250))
        save_generation(image, images, record)
    Image.new("RGB", (128, 256), (9, 9, 9)).save(root / "grid.png")
    entries = [{"index": i, "aesthetic": s, "clip_similarity": 0.3} for i, s in enumerate(scores or [None] * 8)]
    report = {"gate": {"result": "passed"}, "scorers": {"identity": identity}, "images": entries}
    (root / "report.json").write_text(json.dumps(report), encoding="utf-8")
    pointer = {"status": "found", "name": "kolora", "version": "v1", "prefix": "models/kolora/v1/"}
    (root / "champion.json").write_text(json.dumps(pointer), encoding="utf-8")
    return mark_complete(root)


class QueueAesthetic(FakeAesthetic):
    """Scores the candidate first, then (when re-scoring) the champion's images."""

    def __init__(self, *batches: list[float]) -> None:
        super().__init__(batches[0])
        self.batches, self.calls = list(batches), 0

    def score(self, images: list[Image.Image]) -> list[float]:
        self.calls += 1
        return list(self.batches[self.calls - 1])


def _evaluate(inputs: dict[str, Path], out: Path, monkeypatch: pytest.MonkeyPatch, aesthetic: FakeAesthetic) -> dict:
    scorers = Scorers(aesthetic, FakeClip(0.31), facts={"identity": IDENTITY})
    monkeypatch.setattr(evaluate_run, "load_scorers", lambda directory, evaluate, device: scorers)
    argv = ["--profile", "smoke", "--report", str(out), "--evaluate.min_aesthetic", "6.0"]
    for name, path in inputs.items():
        argv += [f"--{name}", str(path)]
    assert evaluate_main(argv) == 0
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


BASE = {"result": "passed", "reason": "mean aesthetic score 6.2000 >= evaluate.min_aesthetic 6.0", "mean_aesthetic": 6.2}


@pytest.mark.parametrize(
    ("champion_mean", "result"),
    [(6.25, "passed"), (6.3, "passed"), (6.3001, "failed"), (7.0, "failed"), (5.0, "passed")],
)
def test_margin_edges(champion_mean: float, result: str) -> None:
    champion = {"status": "found", "version": "v1", "comparable": True, "mean_aesthetic": champion_mean}
    gate = champion_rule(BASE, champion, 0.1)
    assert gate["result"] == result, gate["reason"]
    assert gate["champion"] == champion and gate["champion_margin"] == 0.1
    if result == "failed":
        assert f"< champion v1's {champion_mean:.4f} - evaluate.champion_margin 0.1" in gate["reason"]


def test_absolute_failure_and_missing_or_incomparable_champions() -> None:
    failed = BASE | {"result": "failed", "reason": "mean aesthetic score 5.9 < evaluate.min_aesthetic 6.0"}
    better = {"status": "found", "version": "v1", "comparable": True, "mean_aesthetic": 1.0}
    assert champion_rule(failed, better, 0.1)["result"] == "failed"  # a weak champion never lifts the threshold
    none = champion_rule(BASE, {"status": "none", "reason": "no champion yet: the absolute threshold only"}, 0.1)
    assert none["result"] == "passed" and none["reason"].endswith("no champion yet: the absolute threshold only")
    other = {"status": "found", "version": "v1", "comparable": False, "mean_aesthetic": None, "reason": "another story"}
    assert champion_rule(BASE, other, 0.1) | {"reason": ""} == BASE | {"reason": "", "champion_margin": 0.1, "champion": {
        "status": "found", "version": "v1", "comparable": False, "mean_aesthetic": None}}  # fmt: skip


def test_story_difference_names_the_first_difference() -> None:
    story = [{"index": i, "prompt": f"p{i}", "seed": i, "width": 64, "steps": 4, "cfg_scale": 4.0} for i in range(3)]
    assert story_difference(story, [dict(s) for s in story]) is None
    assert story_difference(story, [*story[:2], story[2] | {"seed": 7}]) == "image 2: seed 7 -> 2"
    assert story_difference(story, story[:2]) == "the story has 3 images, the champion's 2"
    assert story_difference(story, [story[0] | {"lora_strength": 0.5}, *story[1:]]) is None  # the candidate's own business


def test_scorer_identity_is_the_reports_scorers_identity() -> None:
    assert scorer_identity({"scorers": {"identity": "manifest-sha", "kind": "hub"}}) == "manifest-sha"
    assert scorer_identity({"scores": {}}) is None  # a report that records none compares with nothing


def test_same_story_same_scorers_reads_the_champions_report(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage_inputs["champion"] = write_champion(tmp_path / "champion", [6.5] * 8)
    aesthetic = QueueAesthetic([6.3] * 8)
    report = _evaluate(stage_inputs, tmp_path / "out", monkeypatch, aesthetic)
    assert aesthetic.calls == 1, "the champion's scores came from its report, not from scoring again"
    champion = report["champion"]
    assert (champion["status"], champion["comparable"], champion["scores_from"]) == ("found", True, "report")
    assert champion["mean_aesthetic"] == pytest.approx(6.5) and champion["images"][2]["aesthetic"] == 6.5
    gate = report["gate"]
    assert gate["result"] == "failed" and "not better than the champion" in gate["reason"], gate["reason"]
    assert (tmp_path / "out" / "gate.txt").read_text() == "failed\n"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Champion vs challenger" in page and 'alt="champion grid"' in page and 'alt="challenger grid"' in page
    assert page.count("data:image/jpeg;base64,") == 10  # both grids + 8 cards
    assert "-0.200" in page and "<script" not in page and "http" not in page
    assert '"Noto Sans CJK SC"' in page and '"Microsoft YaHei"' in page and "PingFang SC" in page


def test_within_the_margin_passes(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage_inputs["champion"] = write_champion(tmp_path / "champion", [6.35] * 8)
    report = _evaluate(stage_inputs, tmp_path / "out", monkeypatch, QueueAesthetic([6.3] * 8))
    assert report["gate"]["result"] == "passed", report["gate"]["reason"]
    assert "champion v1's 6.3500 - evaluate.champion_margin 0.1" in report["gate"]["reason"]


def test_changed_scorers_re_score_the_champions_images(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The champion's report says 9.0 from another scorer; re-scored now it is 5.0, and the candidate wins."""
    stage_inputs["champion"] = write_champion(tmp_path / "champion", [9.0] * 8, identity="older-scorers")
    aesthetic = QueueAesthetic([6.3] * 8, [5.0] * 8)
    report = _evaluate(stage_inputs, tmp_path / "out", monkeypatch, aesthetic)
    assert aesthetic.calls == 2
    champion = report["champion"]
    assert champion["scores_from"] == "re-scored" and "scorers changed" in champion["reason"]
    assert champion["mean_aesthetic"] == pytest.approx(5.0) and champion["images"][0]["clip_similarity"] == pytest.approx(0.31)
    assert report["gate"]["result"] == "passed"


def test_another_story_is_not_comparable(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage_inputs["champion"] = write_champion(tmp_path / "champion", [9.0] * 8, prompt_3="another prompt")
    report = _evaluate(stage_inputs, tmp_path / "out", monkeypatch, QueueAesthetic([6.3] * 8))
    champion = report["champion"]
    assert champion["comparable"] is False and champion["mean_aesthetic"] is None
    assert "image 3: prompt 'another prompt' -> 'p3'" in champion["reason"]
    assert report["gate"]["result"] == "passed" and "the absolute threshold only" in report["gate"]["reason"]


def test_no_champion_is_the_first_release_not_an_error(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = _evaluate(stage_inputs, tmp_path / "out", monkeypatch, QueueAesthetic([6.3] * 8))
    assert report["champion"]["status"] == "none" and report["gate"]["result"] == "passed"
    assert "no champion (none promoted yet, or latest.json cleared)" in report["gate"]["reason"]
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "no champion (none promoted yet, or latest.json cleared)" in page and page.count("data:image/jpeg;base64,") == 9
