"""bench/pipeline_bench.py drives the real stage CLIs: its command lines must be ones they accept (a renamed artifact
or flag would otherwise show up only on the GPU machine, where its run is expensive)."""

from __future__ import annotations

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
