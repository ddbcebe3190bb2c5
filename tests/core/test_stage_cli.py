"""The shared stage shell: flags, input checks, atomic outputs, one-line errors and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kolora_core.config import RunConfig
from kolora_core.errors import KoloraError
from kolora_core.stage_cli import PARTIAL, stage_main
from kolora_core.stages import COMPLETE_MARKER
from tests.conftest import mark_complete


def _copy_work(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    (outputs["lora"] / "steps.txt").write_text(str(config.train.steps))


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--profile",
        "smoke",
        "--trainset",
        str(tmp_path / "ts"),
        "--models",
        str(tmp_path / "m"),
        "--lora",
        str(tmp_path / "out"),
        *extra,
    ]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    for name in ("ts", "m"):
        (tmp_path / name).mkdir()
        mark_complete(tmp_path / name)
    return tmp_path


def test_flags_reach_the_config_and_outputs_commit(inputs: Path) -> None:
    assert stage_main("train", _copy_work, _args(inputs, "--train.steps", "7")) == 0
    out = inputs / "out"
    assert (out / "steps.txt").read_text() == "7"
    assert (out / COMPLETE_MARKER).exists() and not (out / PARTIAL).exists()


def test_empty_flag_keeps_the_profile_value(inputs: Path) -> None:
    assert stage_main("train", _copy_work, _args(inputs, "--train.steps", "")) == 0
    assert (inputs / "out" / "steps.txt").read_text() == "4"


def test_missing_input_names_the_path(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(inputs)
    args[args.index("--models") + 1] = str(inputs / "absent")
    assert stage_main("train", _copy_work, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kolora train: error: input --models") and str(inputs / "absent") in err[-1]


def test_unfinished_input_is_refused(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (inputs / "m" / COMPLETE_MARKER).unlink()
    assert stage_main("train", _copy_work, _args(inputs)) == 2
    assert "no _SUCCESS marker" in capsys.readouterr().err


def test_sharded_input_is_complete_when_every_shard_is(inputs: Path) -> None:
    (inputs / "m" / COMPLETE_MARKER).unlink()
    for shard in ("shard-0", "shard-1"):
        (inputs / "m" / shard).mkdir()
        mark_complete(inputs / "m" / shard)
    assert stage_main("train", _copy_work, _args(inputs)) == 0


def test_bad_flag_value_names_the_field(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert stage_main("train", _copy_work, _args(inputs, "--train.lora_rank", "zero")) == 2
    assert "train.lora_rank" in capsys.readouterr().err


def test_failure_leaves_no_marker_and_a_rerun_starts_clean(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def crash(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        (outputs["lora"] / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    def refuse(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        raise KoloraError("nothing to train on")

    assert stage_main("train", _copy_work, _args(inputs)) == 0
    assert stage_main("train", crash, _args(inputs)) == 1
    out = inputs / "out"
    assert not (out / COMPLETE_MARKER).exists() and not (out / "half.bin").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kolora train: failed: RuntimeError: boom"
    assert stage_main("train", refuse, _args(inputs)) == 2
    assert capsys.readouterr().err.strip() == "kolora train: error: nothing to train on"
    assert stage_main("train", _copy_work, _args(inputs)) == 0
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "steps.txt"]


def _bad_config(root: Path, kind: str) -> Path:
    """A --config that cannot be read as it is: `kind` says how."""
    config = root / "c.yaml"
    if kind == "config latin-1":
        config.write_bytes("train:\n  steps: 3  # café\n".encode("latin-1"))
    elif kind == "config dir":
        config.mkdir()
    elif kind == "prompts latin-1":
        (root / "p.jsonl").write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
        config.write_text(f"generate:\n  prompts_file: {root / 'p.jsonl'}\n", encoding="utf-8")
    else:
        (root / "p.jsonl").mkdir()
        config.write_text(f"generate:\n  prompts_file: {root / 'p.jsonl'}\n", encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("config latin-1", r"config file .*c\.yaml is not UTF-8 \(byte 0xe9 on line 2\): re-save it as UTF-8"),
        ("config dir", r"config file .*c\.yaml is a directory: pass a YAML file to --config"),
        ("prompts latin-1", r"prompts file .*p\.jsonl is not UTF-8 \(byte 0xe9 on line 1\)"),
        ("prompts dir", r"prompts file .*p\.jsonl is a directory"),
    ],
)
def test_unreadable_config_files_are_one_line_and_exit_2(
    inputs: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    """Each of these was a UnicodeDecodeError or IsADirectoryError traceback with exit 1 (which Argo retries)."""
    config = _bad_config(inputs, kind)
    assert stage_main("train", _copy_work, _args(inputs, "--config", str(config))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
