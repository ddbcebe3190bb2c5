"""`kolora run` as a user types it: flags, exit codes, and the lines printed on failure."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kolora_core.cli import main
from kolora_core.cli import run as cli_run
from kolora_core.cli.dataset_key import check_dataset_key_stored
from kolora_core.cli.run import options_from_args, register
from kolora_core.config.datajuicer_ops import datajuicer_ops
from kolora_core.errors import KoloraError
from kolora_core.runner import engine
from kolora_core.storage.s3 import S3Store
from tests.storage.test_s3 import closed_port

from .conftest import TEMPLATES

pytestmark = pytest.mark.usefixtures("store_credentials")  # steps reach the store with the keys of the environment

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kolora")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["run", *argv])


def cli(store: S3Store, tmp_path: Path, *argv: str) -> int:
    return main(
        ["run", "--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket, "--runs-dir", str(tmp_path), *argv]
    )


def test_flags_become_options() -> None:
    options = options_from_args(parse("-p", "a=1", "-p", "b=x=y", "--profile", "full", "--keep-work"))
    assert options.parameters == {"a": "1", "b": "x=y", "profile": "full"} and options.keep_work
    assert options.s3 is None and options.template == Path("workflows/dist/kolora-pipeline.yaml")
    assert options_from_args(parse()).soft_parameters == {"profile": "smoke"}
    with pytest.raises(KoloraError, match="disagree"):
        options_from_args(parse("--profile", "full", "-p", "profile=smoke"))
    with pytest.raises(KoloraError, match="not NAME=VALUE"):
        options_from_args(parse("-p", "novalue"))
    with pytest.raises(SystemExit):
        parse("--engine", "kubernetes")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc"])
def test_collect_max_gb_is_a_finite_size_or_exit_two(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """nan was a traceback (int(nan)) and -1 a limit below every artifact: refused in one line before anything runs."""
    with pytest.raises(SystemExit) as exc:
        parse("--collect-max-gb", value)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert exc.value.code == 2 and len(errors) == 1, errors
    assert f"argument --collect-max-gb: '{value}' is not a" in errors[0] and "0 or more" in errors[0], errors
    assert options_from_args(parse("--collect-max-gb", "0.5")).collect_max_bytes == 2**29


def test_dataset_key_is_checked_as_kolora_submit_checks_it() -> None:
    """A key that runs here is one a cluster reads the same way (Argo would skip a URL or a path silently)."""
    assert options_from_args(parse("-p", "dataset-key=datasets/mine/")).parameters["dataset-key"] == "datasets/mine"
    for key in ("s3://kolora/datasets/mine", "/datasets/mine", "datasets/mine ", "../mine", "datasets//mine", "./mine"):
        with pytest.raises(KoloraError, match=r"give the key prefix inside the artifact repository's bucket"):
            options_from_args(parse("-p", f"dataset-key={key}"))
    with pytest.raises(KoloraError, match="give -p dataset or -p dataset-key, not both"):
        options_from_args(parse("-p", "dataset=smoke://", "-p", "dataset-key=datasets/mine"))


def test_a_local_dataset_path_is_the_one_the_user_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps run in the repository's root: `-p dataset=my-style` typed in another directory named nothing there and
    failed in ingest ("ingest.source my-style does not exist"), after the store started."""
    (tmp_path / "my-style").mkdir()
    monkeypatch.chdir(tmp_path)
    assert options_from_args(parse("-p", "dataset=my-style")).parameters["dataset"] == str(tmp_path / "my-style")
    with pytest.raises(KoloraError) as refused:
        options_from_args(parse("-p", "dataset=my-styel"))
    assert str(refused.value).startswith(f"-p dataset=my-styel: {tmp_path / 'my-styel'} does not exist: give a folder")
    for kept in ("smoke://", "modelscope://AI-ModelScope/lowres_anime", "data/*.parquet", ""):
        assert options_from_args(parse("-p", f"dataset={kept}")).parameters["dataset"] == kept


@pytest.mark.parametrize("prefix", ["../x", "a/../b", "/models", "", "models/", "team//models"])
def test_a_publish_prefix_no_key_can_carry_is_refused_before_any_step(prefix: str) -> None:
    """It reached the champion step (after ingest and filter) and failed there: "storage key '../x/kolora/latest.json'
    is not a plain relative key", with `kolora run --retry` as advice, which cannot change a parameter."""
    with pytest.raises(KoloraError, match=rf"^-p publish-prefix='{re.escape(prefix)}': give the key prefix of the releases"):
        options_from_args(parse("-p", f"publish-prefix={prefix}"))
    assert options_from_args(parse("-p", "publish-prefix=team-a/models")).parameters["publish-prefix"] == "team-a/models"


@pytest.mark.parametrize("bucket", ["Bad_B", "ab", "-bucket"])
def test_a_release_bucket_s3_refuses_is_refused_before_any_step(bucket: str) -> None:
    """Like a bad publish-prefix, it reached the champion step after ingest and filter."""
    refusal = rf"^-p s3-bucket='{re.escape(bucket)}' is not an S3 bucket name \(S3's rule, for the embedded store\): use 3-63"
    with pytest.raises(KoloraError, match=refusal):
        options_from_args(parse("-p", f"s3-bucket={bucket}"))
    assert options_from_args(parse("-p", "s3-bucket=team-a.releases")).parameters["s3-bucket"] == "team-a.releases"


GCS = "https://storage.googleapis.com"


@pytest.mark.parametrize(
    "flags", [["--s3-endpoint", GCS], ["-p", f"s3-endpoint={GCS}"], ["--s3-endpoint", "", "-p", f"s3-endpoint={GCS}"]]
)
def test_a_gcs_release_bucket_takes_gcs_rule(flags: list[str]) -> None:
    """A GCS team's existing bucket has '_' (GCS allows it, S3 does not): the steps' store decides, -p s3-endpoint
    over --s3-endpoint."""
    assert options_from_args(parse(*flags, "-p", "s3-bucket=my_team_bucket")).parameters["s3-bucket"] == "my_team_bucket"
    with pytest.raises(KoloraError, match=r"^-p s3-bucket='My_Team' is not a GCS bucket name \(GCS's rule, for "):
        options_from_args(parse(*flags, "-p", "s3-bucket=My_Team"))


@pytest.mark.parametrize(
    ("flags", "where"),
    [([], "the embedded store"), (["--s3-endpoint", "http://minio:9000"], "--s3-endpoint 'http://minio:9000'"),
     (["--s3-endpoint", GCS, "-p", "s3-endpoint="], "-p s3-endpoint=''")],
)  # fmt: skip
def test_an_underscore_bucket_elsewhere_keeps_s3_rule_and_says_how_gcs_takes_it(flags: list[str], where: str) -> None:
    with pytest.raises(KoloraError) as refused:
        options_from_args(parse(*flags, "-p", "s3-bucket=my_team_bucket"))
    assert str(refused.value).startswith(f"-p s3-bucket='my_team_bucket' is not an S3 bucket name (S3's rule, for {where}): ")
    assert str(refused.value).endswith(f"letter or digit; a GCS bucket takes GCS's rule with -p s3-endpoint={GCS}")


@pytest.mark.parametrize("started", [False, True])
def test_a_run_stopped_before_it_started_says_nothing_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], started: bool
) -> None:
    """Ctrl-C while the embedded store was starting said "the running step was stopped; `kolora run --retry` goes on
    from what it saved", though no step had run and --retry then found no run to retry."""

    def interrupted(options: Any) -> None:
        if started:  # as the runner does once the run's directory exists
            (options.runs_dir / "run-1").mkdir(parents=True)
            (options.runs_dir / "latest").symlink_to("run-1")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "run_workflow", interrupted)
    assert main(["run", "--runs-dir", str(tmp_path / "runs")]) == 130
    last = {
        False: "kolora run: interrupted before the run started; nothing ran: run it again\n",
        True: "kolora run: interrupted; the running step was stopped; `kolora run --retry` goes on from what it saved\n",
    }
    assert capsys.readouterr().err == last[started]


def test_success_exits_zero_and_prints_the_summary(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "pipeline.yaml"), "-p", "greeting=hi", "--profile", "smoke") == 0
    out = capsys.readouterr()
    assert "Succeeded" in out.out and "report.gate = passed" in out.out
    assert str(store.settings.secret_access_key) not in out.out + out.err
    assert (tmp_path / "latest" / "report.json").exists()


def test_step_failure_exits_non_zero_naming_the_step(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "failing.yaml")) == 1
    err = capsys.readouterr().err
    assert err.startswith("kolora run: step broken failed (exit 3); last lines of its log:\n")
    assert "kolora broken: error: the input is bad" in err
    rerun = "; fix the cause and `kolora run --retry` reruns from the failed step"
    rerun += " (it keeps the -p values: to change one, start a new run)"
    assert err.strip().splitlines()[-1] == f"kolora run: step broken failed (exit 3){rerun}", "the way on, last"


def test_user_errors_are_one_line_exit_two(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "pipeline.yaml"), "-p", "nope=1") == 2
    assert capsys.readouterr().err.startswith("kolora run: error: unknown parameter 'nope'")
    assert cli(store, tmp_path, "--template", str(tmp_path / "missing.yaml")) == 2
    assert "not found: render it first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", "--profil", "smoke"], "kolora run: error: unknown flag --profil: did you mean --profile?"),
        (["run", "--ret"], "kolora run: error: unknown flag --ret: did you mean --retry?"),  # no silent abbreviation
        (["render", "--outt", "x"], "kolora render: error: unknown flag --outt: did you mean --out?"),
        (["upload", "f", "k", "--bukcet", "b"], "kolora upload: error: unknown flag --bukcet: did you mean --bucket?"),
        (["champion", "--reset", "--runs-dir=r", "--nmae"], "kolora champion: error: unknown flag --nmae: did you mean --name?"),
        (["render", "--gpus", "-1"], "kolora render: error: argument --gpus: -1 is negative: expected 0 or more"),
        (["rnu"], "kolora: error: argument command: invalid choice: 'rnu'"),
        # before the subcommand: not the subcommand's flag (it said `kolora render: error: unknown flag --foo`)
        (
            ["--foo", "render"],
            "kolora: error: --foo is not a flag of kolora (only --help comes before the subcommand): the "
            "subcommands are run, render, submit, upload, config, publish, champion, notify; their flags go after them",
        ),
        (
            ["--out", "x", "render"],
            "kolora: error: --out is not a flag of kolora (only --help comes before the subcommand): "
            "it is a flag of kolora render: give it after 'render'",
        ),
        (["-p", "steps=1", "submit"], "kolora: error: -p is not a flag of kolora"),
        (
            ["--rendr"],
            "kolora: error: --rendr is not a flag of kolora (only --help comes before the subcommand): "
            "did you mean the subcommand render?",
        ),  # it said that a subcommand is required
    ],
)
def test_a_mistyped_flag_is_one_line_from_its_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    """argparse answered a mistyped flag of any subcommand from the top-level parser, below `kolora`'s usage:
    `kolora: error: unrecognized arguments: --profil smoke`, naming neither the subcommand nor the flag meant."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(line), err


def test_dead_endpoint_is_one_line_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    code = main(
        [
            "run",
            "--template",
            str(TEMPLATES / "pipeline.yaml"),
            "--s3-endpoint",
            f"http://127.0.0.1:{port}",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and time.monotonic() - started < 5
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kolora run: error: S3 endpoint http://127.0.0.1:{port} does not answer")
    assert lines[0].endswith("(leave it out to use the embedded store)")  # kolora run's --s3-endpoint is optional
    assert out.out == "" and not any(tmp_path.iterdir())  # nothing ran, no run directory


def test_config_flag_parameters_are_checked_before_any_step(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = str(TEMPLATES / "flags.yaml")
    assert cli(store, tmp_path, "--template", template, "-p", "steps=abc") == 2
    out = capsys.readouterr()
    assert out.err.strip() == (
        "kolora run: error: -p steps='abc' (--train.steps) is refused before any step runs: config field 'train.steps': "
        "Input should be a valid integer, unable to parse string as an integer (got 'abc')"
    )
    assert out.out == "" and not any(tmp_path.iterdir()), "nothing started: no run directory"
    assert cli(store, tmp_path, "--template", template, "-p", "rank=0") == 2
    assert "-p rank='0' (--train.lora_rank)" in capsys.readouterr().err
    assert cli(store, tmp_path, "--template", template, "-p", "steps=8", "-p", "rank=4") == 0
    assert "ran with ['--profile', 'smoke', '--train.steps', '8', '--train.lora_rank', '4']" in capsys.readouterr().out


def test_a_yes_for_a_number_parameter_is_refused_before_any_step(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-p steps=yes` (YAML: true) ran with train.steps 1: pydantic's lax mode reads True as 1."""
    assert cli(store, tmp_path, "--template", str(TEMPLATES / "flags.yaml"), "-p", "steps=yes") == 2
    out = capsys.readouterr()
    assert out.err.strip() == (
        "kolora run: error: -p steps='yes' (--train.steps) is refused before any step runs: config field 'train.steps': "
        "got the boolean true (YAML reads an unquoted yes/no, on/off, true/false as a boolean): give an integer"
    )
    assert out.out == "" and not any(tmp_path.iterdir()), "nothing started: no run directory"


PIPELINE = str(REPO / "workflows" / "dist" / "kolora-pipeline.yaml")


def test_a_path_in_p_config_is_named_as_one(store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-p config` holds the config's text; a path there would be refused naming the runner's temporary file."""
    config = tmp_path / "c1.yaml"
    config.write_text("train: {steps: 3}\n", encoding="utf-8")
    runs = tmp_path / "runs"
    assert main(["run", "--template", PIPELINE, "-p", f"config={config}", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"kolora run: error: -p config holds the run config's text, not a path ('{config}'): pass -p config=\"$(cat {config})\"\n"
    )
    assert not runs.exists(), "refused before any step: no run directory"


@pytest.mark.parametrize(
    ("text", "message"),
    [("trian: {steps: 3}", "-p config: unknown config key 'trian'"), ("hello", "-p config must hold a mapping")],
)
def test_run_config_errors_name_the_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert main(["run", "--template", PIPELINE, "-p", f"config={text}", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "kolora-config-" not in err, err


def test_an_unknown_filter_op_in_p_config_is_refused_before_the_store_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It failed the filter step, after `kolora run` had started its embedded store and run ingest."""
    config = "filter: {ops: [{image_shape_filter: {min_width: 96}}, {image_shape_filter: {min_widht: 96}}]}"
    runs = tmp_path / "runs"
    assert main(["run", "--template", PIPELINE, "-p", f"config={config}", "--runs-dir", str(runs)]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [
        "kolora run: error: -p config: config field 'filter.ops[1]': image_shape_filter has no parameter 'min_widht' in "
        f"Data-Juicer {datajuicer_ops().version} (did you mean min_width, min_height, max_width?)"
    ]
    assert out.out == "" and not runs.exists(), "no store (<runs-dir>/.store) started, no run directory, no step"


def test_a_prompts_file_in_p_config_reaches_the_steps_inlined(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps run in another working directory (pods on another machine): the prompts file is read here, where the
    user named it, and the step's run.yaml holds the prompts; a missing one is one line before any step runs."""
    (tmp_path / "story.yaml").write_text("prompts:\n  - {prompt: a girl singing, seed: 7}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    template = str(TEMPLATES / "config.yaml")
    assert cli(store, tmp_path / "runs", "--template", template, "-p", "config=generate: {prompts_file: story.yaml}") == 0
    assert "prompts ['a girl singing'] from story.yaml" in capsys.readouterr().out
    assert cli(store, tmp_path / "none", "--template", template, "-p", "config=generate: {prompts_file: nope.yaml}") == 2
    out = capsys.readouterr()
    assert out.err == (
        "kolora run: error: prompts file nope.yaml does not exist: set generate.prompts_file to a YAML or JSONL file "
        f"(a relative path is read from the working directory, {tmp_path})\n"
    )
    assert out.out == "" and not (tmp_path / "none").exists(), "refused before any step: no run directory"


def test_more_generate_shards_than_prompts_are_refused_before_the_store_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-p generate-shards=16` over the 8-prompt story started 8 generate steps (on Argo: GPU pods that download the
    models) that rendered nothing. The rendered pipeline's generate step is found; the store is never asked."""
    runs = tmp_path / "runs"
    dead = f"http://127.0.0.1:{closed_port()}"  # reached only if the check let the run through
    for shards in ("9", "16"):
        assert main(["run", "--template", PIPELINE, "-p", f"generate-shards={shards}", "--s3-endpoint", dead,
                     "--runs-dir", str(runs)]) == 2  # fmt: skip
        out = capsys.readouterr()
        assert out.err == (
            f"kolora run: error: -p generate-shards={shards}: the story has 8 prompts (profile smoke), so {int(shards) - 8} "
            f"of the {shards} shards would render nothing (each a GPU pod that downloads the models first); pass -p "
            "generate-shards=8 or fewer\n"
        )
        assert out.out == "" and not runs.exists(), "no store contacted, no run directory"


SHARDS = str(TEMPLATES / "shards.yaml")  # a generate-like step: profile, -p config, -p prompts, generate-shards


def _story(count: int) -> str:
    return "[" + ", ".join(f"{{prompt: p{i}, seed: {i}}}" for i in range(count)) + "]"


def test_as_many_generate_shards_as_the_profile_has_prompts_run(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(store, tmp_path / "eight", "--template", SHARDS, "-p", "generate-shards=8") == 0
    assert "8 prompts in 8 shards" in capsys.readouterr().out
    assert cli(store, tmp_path / "nine", "--template", SHARDS, "-p", "generate-shards=9") == 2
    assert "-p generate-shards=9: the story has 8 prompts (profile smoke)" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["-p prompts", "-p config", "prompts file"])
def test_generate_shards_are_counted_against_the_story_the_parameters_give(
    given: str, store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the profile's 8: three prompts take at most 3 shards; ten (with a `-p config` grid that holds them) take
    10, also as `-p prompts`: the single-value check of flags.py, which sees no `-p config`, refused those for the
    profile's 2x4 grid."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "three.yaml").write_text(f"prompts: {_story(3)}\n", encoding="utf-8")
    (tmp_path / "ten.yaml").write_text(f"prompts: {_story(10)}\n", encoding="utf-8")
    grid = "evaluate: {grid_rows: 5}"
    three, ten, where = {  # the -p values giving 3 and 10 prompts, and where the refusal says they come from
        "-p prompts": (f"prompts={_story(3)}", ["-p", f"prompts={_story(10)}", "-p", f"config={grid}"], "-p prompts"),
        "-p config": (f"config=generate: {{prompts: {_story(3)}}}",
                      ["-p", f"config={{generate: {{prompts: {_story(10)}}}, {grid}}}"], "-p config"),
        "prompts file": ("config=generate: {prompts_file: three.yaml}",
                         ["-p", f"config={{generate: {{prompts_file: ten.yaml}}, {grid}}}"],
                         "three.yaml, the generate.prompts_file of -p config"),
    }[given]  # fmt: skip
    assert cli(store, tmp_path / "a", "--template", SHARDS, "-p", three, "-p", "generate-shards=4") == 2
    out = capsys.readouterr()
    assert out.err == (
        f"kolora run: error: -p generate-shards=4: the story has 3 prompts ({where}), so 1 of the 4 shards would render "
        "nothing (each a GPU pod that downloads the models first); pass -p generate-shards=3 or fewer\n"
    )
    assert out.out == "" and not (tmp_path / "a").exists(), "refused before the store: no run directory"
    assert cli(store, tmp_path / "b", "--template", SHARDS, "-p", three, "-p", "generate-shards=3") == 0
    assert "3 prompts in 3 shards" in capsys.readouterr().out
    assert cli(store, tmp_path / "c", "--template", SHARDS, *ten, "-p", "generate-shards=10") == 0
    assert "10 prompts in 10 shards" in capsys.readouterr().out
    assert cli(store, tmp_path / "d", "--template", SHARDS, *ten, "-p", "generate-shards=11") == 2
    assert "-p generate-shards=11: the story has 10 prompts" in capsys.readouterr().err


def test_a_story_the_grid_cannot_hold_is_refused_before_the_store_with_the_whole_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten `-p prompts` run with a `-p config` grid that holds them (above); without one, the run is refused before
    any store is contacted, naming the rows that would hold them."""
    dead = f"http://127.0.0.1:{closed_port()}"  # reached only if the check let the run through
    for config in ((), ("-p", "config=evaluate: {grid_rows: 4}")):
        runs = tmp_path / "runs"
        argv = ["run", "--template", SHARDS, "-p", f"prompts={_story(10)}", *config, "--s3-endpoint", dead, "--runs-dir"]
        assert main([*argv, str(runs)]) == 2
        out = capsys.readouterr()
        assert out.err.endswith(
            "evaluate grid 2x4 has 8 cells but generate.prompts has 10: set evaluate.grid_rows 5 (or raise "
            "evaluate.grid_columns)\n"
        ), out.err
        assert out.out == "" and not runs.exists(), "no store contacted, no run directory"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")  # a zombie is gone


def _start_sleepy(store: S3Store, tmp_path: Path, **popen: Any) -> tuple[subprocess.Popen[str], int, int]:
    """A real `kolora run` of sleepy.yaml, once its step and the step's child (which ignores SIGTERM) are running."""
    pids = tmp_path / "pids"
    argv = [sys.executable, "-m", "kolora_core.cli", "run", "--template", str(TEMPLATES / "sleepy.yaml"), "-p", f"pids={pids}"]
    argv += ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket, "--runs-dir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # with the store's keys (the autouse fixture)
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, text=True, **{**streams, **popen})
    deadline = time.monotonic() + 120
    while not pids.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not pids.exists():
        proc.kill()
        pytest.fail(f"the step did not start: {proc.communicate(timeout=10)}")
    step, child = (int(p) for p in pids.read_text().split())
    assert _alive(step) and _alive(child)
    return proc, step, child


def _assert_stopped(tmp_path: Path, step: int, child: int, out: str | None = None) -> None:
    assert not _alive(step) and not _alive(child), "no process left behind, not even the one that ignores SIGTERM"
    summary = (tmp_path / "runs" / "latest" / "summary.txt").read_text()
    assert ": Failed in " in summary and (out is None or summary in out)
    line = re.search(r"sleeper\s+Failed\s+(\d+\.\d)s\s+\(interrupted\)", summary)
    assert line and float(line.group(1)) > 0, f"how long it ran (not 0.0s): {summary}"


@pytest.mark.parametrize(
    ("sig", "code", "why"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGHUP, 129, "hung up (SIGHUP: the terminal closed)")],
)
def test_sigterm_and_sighup_stop_the_step_write_the_summary_and_exit_128_plus_the_signal(
    store: S3Store, tmp_path: Path, sig: signal.Signals, code: int, why: str
) -> None:
    """What Kubernetes (preemption) or `argo stop` sends, and what a closed terminal or a dropped ssh connection sends:
    a real `kolora run` process, its step and the step's child."""
    proc, step, child = _start_sleepy(store, tmp_path)
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    go_on = "; `kolora run --retry` goes on from what it saved"
    assert err.strip().splitlines()[-1] == f"kolora run: {why}; the running step was stopped{go_on}"
    _assert_stopped(tmp_path, step, child, out)


def test_closing_the_terminal_stops_the_step(store: S3Store, tmp_path: Path) -> None:
    """The real hangup: `kolora run` on a terminal of its own (its controlling terminal), which then closes. The kernel
    sends SIGHUP to the runner only (the step is in a session of its own); the terminal is gone, so the runner's
    writes to it fail, and the run must still stop the step, write its summary and exit 129."""
    master, slave = pty.openpty()

    def own_terminal() -> None:  # after start_new_session's setsid: the terminal becomes the session's
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    drained = threading.Event()

    def drain() -> None:  # read the terminal as a terminal emulator would, until it is closed
        while not drained.is_set():
            if select.select([master], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    os.read(master, 65536)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    tty = {"stdin": slave, "stdout": slave, "stderr": slave}
    try:
        proc, step, child = _start_sleepy(store, tmp_path, start_new_session=True, preexec_fn=own_terminal, **tty)
    finally:
        os.close(slave)
    try:
        drained.set()
        reader.join()
        os.close(master)  # the terminal window closes: hangup
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 129
    _assert_stopped(tmp_path, step, child)


def test_a_second_ctrl_c_during_the_grace_still_kills_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Impatience (Ctrl-C again while the step has its 10 s to save) must not leave the step's group running."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"

        def impatient(pid: int, timeout: float | None = None) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(engine, "_wait_unreaped", impatient)
        with pytest.raises(KeyboardInterrupt):
            engine.stop_group(proc)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_dataset_key_with_nothing_stored_is_refused_before_the_run(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in -p dataset-key ended in ingest ("did not arrive"), after the run had started: now one line before
    anything is written, naming the keys beside it; a stored key (a folder or one object) passes the check."""
    folder = tmp_path / "style"
    folder.mkdir()
    (folder / "a.txt").write_text("a", encoding="utf-8")
    store.upload_tree(folder, "cli-datasets/my-style")
    store.upload_file(folder / "a.txt", "cli-datasets/one.parquet")
    runs = tmp_path / "runs"
    assert cli(store, runs, "--profile", "smoke", "-p", "dataset-key=cli-datasets/my-styel") == 2  # the rendered pipeline
    err = capsys.readouterr().err
    assert err.startswith("kolora run: error: -p dataset-key=cli-datasets/my-styel: nothing is stored under ")
    assert "(did you mean cli-datasets/my-style?)" in err and "`kolora upload FOLDER cli-datasets/my-styel`" in err
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != ".store"]  # no run directory
    assert cli(store, runs, "--profile", "smoke", "-p", "dataset-key=cli-datasets/zzz") == 2
    assert "(cli-datasets/ holds my-style, one.parquet): give a stored key, or upload" in capsys.readouterr().err
    for key in ("cli-datasets/my-style", "cli-datasets/one.parquet", ""):
        check_dataset_key_stored(store, {"dataset-key": key})
