"""The shared stage shell: flags, input checks, atomic outputs, resumable outputs, one-line errors and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kolora_core.commit import STAGING
from kolora_core.config import RunConfig
from kolora_core.errors import KoloraError
from kolora_core.stage_cli import stage_main
from kolora_core.stages import COMPLETE_MARKER, STAGES
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
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "steps.txt"]
    assert not (inputs / STAGING).exists()  # staged beside the output, gone after the commit


def test_empty_flag_keeps_the_profile_value(inputs: Path) -> None:
    assert stage_main("train", _copy_work, _args(inputs, "--train.steps", "")) == 0
    assert (inputs / "out" / "steps.txt").read_text() == "4"


def test_missing_input_names_the_path(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(inputs)
    args[args.index("--models") + 1] = str(inputs / "absent")
    assert stage_main("train", _copy_work, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kolora train: error: input --models") and str(inputs / "absent") in err[-1]


def test_an_optional_input_that_is_not_there_is_not_given(inputs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The generate template passes --prompt-embeddings always, at /kolora/inputs/prompt-embeddings (the local process
    engine: under the step's scratch directory); an optional artifact not supplied leaves nothing there. generate then
    runs without it (encoding its prompts itself), as when the flag is left out. That is the workflow's normal case:
    an info line saying what it costs, not "does not exist" (which read as an error in every such run); a path typed
    by hand that is not there is a warning."""
    (inputs / "lora").mkdir()
    mark_complete(inputs / "lora")
    seen: list[list[str]] = []

    def work(config: RunConfig, given: dict[str, Path], outputs: dict[str, Path]) -> None:
        seen.append(sorted(given))

    argv = [
        "--profile",
        "smoke",
        "--models",
        str(inputs / "m"),
        "--lora",
        str(inputs / "lora"),
        "--images",
        str(inputs / "images"),
    ]
    step = inputs / "scratch" / "inputs" / "prompt-embeddings"  # what the process engine makes of the template's path
    with caplog.at_level("INFO", logger="kolora"):
        assert stage_main("generate", work, [*argv, "--prompt-embeddings", str(step)]) == 0
        assert stage_main("generate", work, [*argv, "--prompt-embeddings", str(inputs / "not-supplied")]) == 0
        assert stage_main("generate", work, argv) == 0
    assert seen == [["lora", "models"]] * 3
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "prompt-embeddings" in r.getMessage()]
    assert lines == [
        ("INFO", f"no prompt-embeddings input (none supplied at {step}): generate encodes the prompts itself (loads ChatGLM3)"),
        (
            "WARNING",
            f"input --prompt-embeddings {inputs / 'not-supplied'} does not exist: generate encodes the prompts itself "
            "(loads ChatGLM3); check the path",
        ),
    ]


def test_every_optional_input_says_what_the_stage_does_without_it() -> None:
    """The line for an optional input or upload not there names what the stage does instead (`Stage.without`)."""
    for stage in STAGES.values():
        assert {name for name in stage.optional if name in stage.inputs} | set(stage.uploads) == set(stage.without), stage.name


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

    out = inputs / "out"
    assert stage_main("train", crash, _args(inputs)) == 1
    assert out.is_dir() and not any(out.iterdir()), "a failed attempt leaves its output path empty: Argo uploads nothing"
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kolora train: failed: RuntimeError: boom"
    assert stage_main("train", _copy_work, _args(inputs)) == 0
    committed = (out / COMPLETE_MARKER).read_text()
    assert stage_main("train", crash, _args(inputs)) == 1
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "steps.txt"], "or exactly the previous commit"
    assert (out / COMPLETE_MARKER).read_text() == committed
    capsys.readouterr()
    assert stage_main("train", refuse, _args(inputs)) == 2
    assert capsys.readouterr().err.strip() == "kolora train: error: nothing to train on"
    assert stage_main("train", _copy_work, _args(inputs, "--train.steps", "9")) == 0
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "steps.txt"] and (out / "steps.txt").read_text() == "9"


def test_resumable_dirs_default_beside_the_outputs_and_survive_failures(inputs: Path) -> None:
    seen: list[Path] = []

    def checkpointing_crash(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        seen.append(outputs["checkpoints"])
        (outputs["checkpoints"] / "step-2.ckpt").write_text("state")
        raise RuntimeError("preempted")

    def resume(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        assert (outputs["checkpoints"] / "step-2.ckpt").read_text() == "state"
        (outputs["lora"] / "steps.txt").write_text("resumed")

    assert stage_main("train", checkpointing_crash, _args(inputs)) == 1
    # `<--lora>.checkpoints`: a second run by hand into the same parent (--lora other) keeps a state of its own
    assert seen == [inputs / "out.checkpoints"] and not (inputs / "out" / "checkpoints").exists()
    assert stage_main("train", resume, _args(inputs)) == 0
    assert (inputs / "out.checkpoints" / "step-2.ckpt").exists(), "the shell never stages, marks or deletes a resumable dir"
    assert not (inputs / "out.checkpoints" / COMPLETE_MARKER).exists()
    argv = _args(inputs)
    argv[argv.index("--lora") + 1] = str(inputs / "other")
    assert stage_main("train", checkpointing_crash, argv) == 1 and seen[-1] == inputs / "other.checkpoints"
    assert stage_main("train", checkpointing_crash, _args(inputs, "--checkpoints", str(inputs / "elsewhere"))) == 1
    assert seen[-1] == inputs / "elsewhere" and (inputs / "elsewhere" / "step-2.ckpt").exists()


def test_junk_beside_a_committed_input_is_removed_before_the_work(inputs: Path, caplog: pytest.LogCaptureFixture) -> None:
    (inputs / "m" / "model.bin").write_text("weights")
    mark_complete(inputs / "m")
    (inputs / "m" / ".partial").mkdir()
    (inputs / "m" / ".partial" / "model.bin").write_text("half")  # what a failed attempt uploaded beside it
    (inputs / "m" / "stray.txt").write_text("junk")

    def look(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        names = sorted(p.relative_to(inputs["models"]).as_posix() for p in inputs["models"].rglob("*"))
        (outputs["lora"] / "seen.txt").write_text(",".join(names))

    with caplog.at_level("WARNING", logger="kolora"):
        assert stage_main("train", look, _args(inputs)) == 0
    assert (inputs / "out" / "seen.txt").read_text() == f"{COMPLETE_MARKER},model.bin"
    lines = [r.getMessage() for r in caplog.records if "input --models" in r.getMessage()]
    why = "its _SUCCESS does not list (a failed attempt's uploads, or files added after the commit)"
    assert lines == [f"input --models: removed 2 file(s) {why}: .partial/model.bin, stray.txt"]


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
        ("config dir", r"config file .*c\.yaml is a directory: pass a YAML, JSON or TOML file to --config"),
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


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lora", "ts", r"--lora and --trainset are the same directory \(.*/ts\): give each its own"),
        ("--lora", ".", r"--trainset .*/ts lies inside --lora .*: give each its own directory"),
        ("--lora", "ts/lora", r"--lora .*/ts/lora lies inside --trainset .*/ts: give each"),
        ("--checkpoints", "out", r"--lora and --checkpoints are the same directory"),
        ("--checkpoints", "m/ck", r"--checkpoints .*/m/ck lies inside --models"),
    ],
)
def test_an_output_in_the_place_of_another_artifact_is_refused_before_anything_is_touched(
    inputs: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    """The same directory as input and output used to replace the input with exit 0 (filter --dataset D --trainset D)."""
    (inputs / "ts" / "0.png").write_text("an image the marker does not list")  # what accept_input would prune
    argv = _args(inputs)
    if flag in argv:
        argv[argv.index(flag) + 1] = str(inputs / value)
    else:
        argv += [flag, str(inputs / value)]
    assert stage_main("train", _copy_work, argv) == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
    assert (inputs / "ts" / "0.png").exists() and (inputs / "ts" / COMPLETE_MARKER).exists()
    assert not (inputs / "out").exists() and not (inputs / STAGING).exists()


def test_another_stages_committed_output_is_not_replaced(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = inputs / "fetched"
    models.mkdir()
    (models / "unet.safetensors").write_text("18 GB of weights")
    (models / COMPLETE_MARKER).write_text('{"stage": "fetch-models", "files": ["unet.safetensors"]}')
    argv = _args(inputs)
    argv[argv.index("--lora") + 1] = str(models)  # given as train's --lora by mistake
    assert stage_main("train", _copy_work, argv) == 2
    assert "holds what stage fetch-models committed, and train would replace it" in capsys.readouterr().err
    assert (models / "unet.safetensors").read_text() == "18 GB of weights"
