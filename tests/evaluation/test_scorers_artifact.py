"""fetch-models writes the scorers artifact (tiny for smoke, from the hubs otherwise) and evaluate scores with it:
both stage CLIs as the workflow runs them, exit codes included."""

from __future__ import annotations

import importlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.evaluate import main as evaluate_main
from jobs.fetch_models import main as fetch_models_main
from kolora_core.models.random_scorers import write_random_aesthetic, write_random_chinese_clip
from kolora_core.models.scorers import scorer_identity
from kolora_core.stages import COMPLETE_MARKER
from tests.evaluation.test_evaluate_stage import stage_inputs  # noqa: F401 - the fixture is used by name
from tests.models.fake_hub import FakeHub, modelscope_snapshot, point_hf_client_at, serve

AESTHETIC_REPO = "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"
CLIP_REPO = "OFA-Sys/chinese-clip-vit-base-patch16"


def _fetch(tmp_path: Path, profile: str, *extra: str) -> int:
    return fetch_models_main(
        ["--profile", profile, "--models", str(tmp_path / "models"), "--scorers", str(tmp_path / "scorers"), *extra]
    )


def _evaluate(inputs: dict[str, Path], scorers: Path, out: Path, profile: str) -> dict:
    argv = ["--profile", profile, "--report", str(out)]
    for name, path in (inputs | {"scorers": scorers}).items():
        argv += [f"--{name}", str(path)]
    assert evaluate_main(argv) == 0
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture
def hubs(tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """ModelScope (faked function) serving the tiny base model, a hub on 127.0.0.1 serving tiny scorers."""
    calls: list = []
    kolors = {"Kwai-Kolors/Kolors": tiny_models / "kolors", "AI-ModelScope/sdxl-vae-fp16-fix": tiny_models / "sdxl-vae-fp16-fix"}
    monkeypatch.setattr(
        importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", modelscope_snapshot(kolors, calls)
    )
    hub = FakeHub()
    hub.add(AESTHETIC_REPO, write_random_aesthetic(tmp_path / "published" / "aesthetic", 5))
    hub.add(CLIP_REPO, write_random_chinese_clip(tmp_path / "published" / "clip", 5))
    with serve(hub) as endpoint:
        point_hf_client_at(endpoint, monkeypatch)
        yield hub


def test_smoke_fetch_models_writes_tiny_scorers_that_evaluate_scores(
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
) -> None:
    assert _fetch(tmp_path, "smoke") == 0
    scorers = tmp_path / "scorers"
    committed = json.loads((scorers / COMPLETE_MARKER).read_text())["files"]
    assert "kolora_models.json" in committed and "aesthetic/model.safetensors" in committed and "clip/vocab.txt" in committed
    report = _evaluate(stage_inputs, scorers, tmp_path / "report", "smoke")
    assert report["scorers"]["identity"] == scorer_identity(scorers) and report["scorers"]["kind"] == "tiny"
    assert report["gate"]["result"] == "passed" and report["scores"]["clip_similarity"]["status"] == "scored"


def test_full_profile_downloads_scorers_from_the_hub_and_evaluate_names_them(
    hubs: FakeHub,
    stage_inputs: dict[str, Path],  # noqa: F811 - pytest fixture
    tmp_path: Path,
) -> None:
    assert _fetch(tmp_path, "full") == 0
    report = _evaluate(stage_inputs, tmp_path / "scorers", tmp_path / "report", "full")
    assert report["scorers"] == {
        "identity": scorer_identity(tmp_path / "scorers"),
        "kind": "hub",
        "aesthetic": {"repo": f"hf://{AESTHETIC_REPO}", "revision": None},
        "clip": {"repo": f"hf://{CLIP_REPO}", "revision": None},
    }
    assert report["scores"]["aesthetic"]["model"] == f"hf://{AESTHETIC_REPO}@default"
    assert report["gate"]["result"] == "failed" and "< evaluate.min_aesthetic 6.0" in report["gate"]["reason"]


def test_fetch_models_refuses_a_repo_whose_processor_file_evaluate_would_refuse(
    hubs: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The repo's preprocessor_config.json shadows a method of the image processor: fetch-models exits 2 with
    evaluate's line (pointing the config field at another repo), before train or generate runs, and commits nothing."""
    files = hubs.repos[CLIP_REPO]
    files["preprocessor_config.json"] = json.dumps(json.loads(files["preprocessor_config.json"]) | {"preprocess": 1}).encode()
    assert _fetch(tmp_path, "full") == 2
    line = (
        "'preprocess' is not a setting but a method or property of ChineseCLIPImageProcessor, which transformers would "
        f"replace with the file's value: the file is as hf://{CLIP_REPO}@default publishes it: point evaluate.clip_repo "
        "at another repo or revision"
    )
    where = rf"{re.escape(str(tmp_path))}/\S*scorers/clip/preprocessor_config\.json"  # in the stage's staging directory
    assert re.fullmatch(
        rf"kolora fetch-models: error: {where}: {re.escape(line)}", capsys.readouterr().err.strip().splitlines()[-1]
    )
    assert not (tmp_path / "scorers" / COMPLETE_MARKER).exists()


def test_exit_codes_tell_the_workflow_what_to_retry(
    hubs: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 (never retried): the config names a repo that is not there; 75 (retried): the hub cannot be reached."""
    assert _fetch(tmp_path / "a", "full", "--evaluate.clip_repo", "hf://OFA-Sys/no-such-clip") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("kolora fetch-models: error: downloading config.json, preprocessor_config.json, vocab.txt")
    assert "hf://OFA-Sys/no-such-clip (revision default, evaluate.clip_repo)" in err and "no such repo" in err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        point_hf_client_at(f"http://127.0.0.1:{sock.getsockname()[1]}", monkeypatch)
    assert _fetch(tmp_path / "b", "full") == 75
    assert "check network access to the hub, then retry" in capsys.readouterr().err
    assert not (tmp_path / "b" / "scorers" / COMPLETE_MARKER).exists()
