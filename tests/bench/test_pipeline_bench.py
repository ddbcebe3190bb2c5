"""bench/pipeline_bench.py drives the real stage CLIs: its command lines must be ones they accept (a renamed artifact
or flag would otherwise show up only on the GPU machine, where its run is expensive)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.pipeline_bench import ORDER, stage_argv, write_first_champion
from kolora_core import commit
from kolora_core.evaluation.champion import read_champion
from kolora_core.stage_cli import build_parser, config_from_args
from kolora_core.stages import STAGES


def test_every_stage_accepts_its_command_line_and_every_artifact_lives_in_the_work_dir(tmp_path: Path) -> None:
    produced: set[str] = {"champion"}
    for name in ORDER:
        stage = STAGES[name]
        argv = stage_argv(name, tmp_path, "full", ["--models.source", "random", "--ingest.source", "/data/pictures"])
        assert argv[1:3] == ["-m", stage.module]
        args = build_parser(stage).parse_args(argv[3:])
        config = config_from_args(args)
        assert config.models.source == "random" and config.ingest.source == "/data/pictures"
        for artifact in (*stage.inputs, *stage.outputs, *stage.resumable):
            assert getattr(args, artifact.replace("-", "_")) == tmp_path / artifact
        assert set(stage.inputs) <= produced, f"{name} reads what no earlier stage of ORDER wrote"
        produced |= set(stage.outputs)


def test_the_champion_is_a_committed_first_release(tmp_path: Path) -> None:
    write_first_champion(tmp_path, "kolora")
    assert commit.accept_input("champion", tmp_path / "champion") == []
    assert read_champion(tmp_path / "champion") is None


def test_the_gpu_stages_and_this_bench_import_where_boto3_and_data_juicer_are_not_installed() -> None:
    """A GPU node (and the benchmark machine) has no boto3 or Data-Juicer: only the runner talks to the store and only
    filter runs Data-Juicer, so the train/generate/evaluate/fetch-models stages must import without them."""
    absent = ("boto3", "botocore", "s3transfer", "data_juicer", "ray")
    gpu_stages = [STAGES[name].module for name in ("fetch-models", "train", "generate", "evaluate")]
    script = "\n".join(
        [
            "import importlib, sys",
            f"for name in {absent!r}: sys.modules[name] = None  # as if not installed",
            f"for module in {[*gpu_stages, 'bench.pipeline_bench']!r}: importlib.import_module(module)",
            f"missing = sorted(name for name in {absent!r} if sys.modules.get(name) is not None)",
            "assert not missing, missing",
        ]
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
