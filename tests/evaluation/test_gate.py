"""The gate: mean aesthetic >= evaluate.min_aesthetic and no failed image, decided on scorer outputs at the edges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import kolora_core.evaluation.run as evaluate_run
from jobs.evaluate import main as evaluate_main
from kolora_core.evaluation.gate import ImageVerdict, decide
from kolora_core.evaluation.scoring import Scorers
from kolora_core.models.scorers import scorer_identity
from tests.evaluation.test_evaluate_stage import stage_inputs  # noqa: F401 - the fixture is used by name


class FakeAesthetic:
    name = "fake-aesthetic"

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    def score(self, images: list[Image.Image]) -> list[float]:
        assert len(images) == len(self.scores)
        return list(self.scores)


class FakeClip:
    name = "fake-clip"

    def __init__(self, value: float) -> None:
        self.value = value

    def similarity(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        assert texts == [f"p{i}" for i in range(len(images))]  # each image against its own prompt, as written
        return [self.value] * len(images)


@pytest.mark.parametrize(
    ("scores", "result"),
    [
        ([6.0] * 8, "passed"),
        ([5.999] * 8, "failed"),
        ([5.0, 7.0] * 4, "passed"),  # the mean counts, not the worst image
        ([5.999, 6.0] * 4, "failed"),
        ([6.001] * 7 + [5.993], "passed"),  # mean 6.0
    ],
)
def test_threshold_edges(scores: list[float], result: str) -> None:
    gate = decide([ImageVerdict(i, s) for i, s in enumerate(scores)], 6.0, None)
    assert gate["result"] == result, gate["reason"]


def test_a_failed_image_fails_the_gate_whatever_the_mean() -> None:
    images = [ImageVerdict(i, 9.0) for i in range(8)]
    images[5].failures.append("blank image (pixel std 0.00 < 1.0)")
    gate = decide(images, 6.0, None)
    assert gate["result"] == "failed" and gate["failed_images"] == [5] and "image 5: blank image" in gate["reason"]


def test_no_scorer_is_skipped_not_invented() -> None:
    gate = decide([ImageVerdict(i) for i in range(8)], 6.0, "scoring skipped: no model")
    assert (gate["result"], gate["mean_aesthetic"], gate["reason"]) == ("skipped", None, "scoring skipped: no model")


def _run(inputs: dict[str, Path], out: Path, *extra: str) -> int:
    argv = ["--profile", "smoke", "--report", str(out), *extra]
    for name, path in inputs.items():
        argv += [f"--{name}", str(path)]
    return evaluate_main(argv)


@pytest.mark.parametrize(("score", "gate"), [(5.999, "failed"), (6.0, "passed")])
def test_stage_writes_the_gate_from_scorer_outputs(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    score: float,
    gate: str,
) -> None:
    fakes = Scorers(FakeAesthetic([score] * 8), FakeClip(0.31))
    monkeypatch.setattr(evaluate_run, "load_scorers", lambda directory, evaluate, device: fakes)
    assert _run(stage_inputs, tmp_path / "out", "--evaluate.min_aesthetic", "6.0") == 0  # the full profile's bar
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert (tmp_path / "out" / "gate.txt").read_text() == f"{gate}\n"
    assert (tmp_path / "out" / "mean_aesthetic.txt").read_text() == f"{score:.4f}\n"  # the workflow's mean-aesthetic
    assert report["gate"]["result"] == gate and report["gate"]["mean_aesthetic"] == pytest.approx(score)
    assert [i["aesthetic"] for i in report["images"]] == [score] * 8
    assert report["scores"]["aesthetic"] | {"stats": None} == {"status": "scored", "reason": None, "model": "fake-aesthetic"} | {
        "stats": None
    }
    assert report["scores"]["aesthetic"]["stats"]["mean"] == pytest.approx(score)
    assert report["scores"]["clip_similarity"]["stats"]["min"] == pytest.approx(0.31)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert f"gate: {gate}" in page and f"{score:.3f}" in page


def test_clip_threshold_and_blank_images_fail_images(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Image.new("RGB", (64, 64)).save(stage_inputs["images"] / "shard-0" / "006.png")  # what a NaN decode looks like
    clip = FakeClip(0.1)
    monkeypatch.setattr(evaluate_run, "load_scorers", lambda directory, evaluate, device: Scorers(FakeAesthetic([7.0] * 8), clip))
    assert _run(stage_inputs, tmp_path / "a") == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text(encoding="utf-8"))
    assert report["gate"]["result"] == "failed" and report["gate"]["failed_images"] == [6]
    assert report["images"][6]["failures"] == ["blank image (pixel std 0.00 < 1.0)"]
    assert _run(stage_inputs, tmp_path / "b", "--evaluate.min_clip_similarity", "0.2") == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text(encoding="utf-8"))
    assert report["gate"]["failed_images"] == list(range(8))
    assert report["images"][0]["failures"] == ["CLIP similarity 0.1000 < evaluate.min_clip_similarity 0.2"]


def test_real_tiny_scorers_through_the_cli(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
) -> None:
    """The scorers artifact fetch-models writes for the smoke profile, loaded and scored by the evaluate CLI."""
    assert _run(stage_inputs, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    aesthetic_repo = "hf://shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"
    assert report["scores"]["aesthetic"]["model"] == f"tiny random stand-in for {aesthetic_repo}"
    assert report["scorers"]["identity"] == scorer_identity(stage_inputs["scorers"])
    assert report["scorers"]["kind"] == "tiny" and "RANDOM-WEIGHT" in report["scorers"]["note"]
    assert report["scorers"]["clip"]["stands_in_for"] == "hf://OFA-Sys/chinese-clip-vit-base-patch16"
    assert all(isinstance(i["aesthetic"], float) and -1 <= i["clip_similarity"] <= 1 for i in report["images"])
    assert len({i["aesthetic"] for i in report["images"]}) == 8  # each image scored, not a constant
    assert report["gate"]["result"] == "passed"  # the smoke threshold lets random scorers through, on purpose
