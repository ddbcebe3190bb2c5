"""The stage CLIs explain themselves: defaults and choices in --help, own sections first, one-line typo hints,
config files in YAML, JSON or TOML, and --help without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kolora_core.cli import main
from kolora_core.config import dump_config, load_config
from kolora_core.config.flags import RUN_SECTION, config_flag_help, section_titles
from kolora_core.errors import KoloraError
from kolora_core.stage_cli import build_parser, config_from_args, stage_main
from kolora_core.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]


def _help(stage: str, full: bool = False) -> str:
    return build_parser(STAGES[stage], full=full).format_help()


def test_help_shows_each_fields_type_choices_default_and_profile_values() -> None:
    text = " ".join(_help("train").split())  # argparse wraps lines at the terminal width
    assert "--train.precision {16-mixed,bf16-mixed,32-true,32}" in text
    assert "(default: 16-mixed; smoke: 32-true)" in text
    assert "--train.steps INT" in text and "(default: 500; smoke: 4)" in text
    assert "--train.compile_cache_dir TEXT|null" in text
    assert "--train.gradient_checkpointing {true,false,auto}" in text
    assert "--train.lora_target_modules YAML-LIST" in text and "(default: [to_q, to_k, to_v, to_out])" in text


def test_every_field_has_a_description() -> None:
    missing = [f.dotted for f in config_flag_help() if f.help.startswith("(default")]
    assert missing == []


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_describes_its_own_sections_first_and_lists_the_others(stage: str) -> None:
    text = _help(stage)
    own = [*STAGES[stage].config_sections, RUN_SECTION]
    headings = [line.removesuffix(":") for line in text.splitlines() if line.removesuffix(":") in section_titles()]
    assert headings == own, "its own sections are the described groups, in order"
    others = [s for s in section_titles() if s not in own]
    brief = text.split("other sections", 1)[1] if others else ""
    for section in others:
        assert f"\n  {section}: " in brief
    assert all(f"--{f.dotted} " in _help(stage, full=True) for f in config_flag_help())


def test_every_config_section_is_some_stages_own() -> None:
    owned = {s for stage in STAGES.values() for s in stage.config_sections}
    assert owned == set(section_titles()) - {RUN_SECTION}


def _train_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--trainset", str(tmp_path), "--models", str(tmp_path), "--lora", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (["--train.stpes", "7"], "unknown flag --train.stpes: did you mean --train.steps?"),
        (["--train.stpes=7"], "unknown flag --train.stpes: did you mean --train.steps?"),
        (["--train.ste", "7"], "unknown flag --train.ste: did you mean --train.steps?"),  # no silent abbreviation
        (["--genrate.steps", "2"], "unknown flag --genrate.steps: did you mean --generate.steps?"),
    ],
)
def test_a_typo_is_one_line_naming_the_closest_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        stage_main("train", "unused:work", _train_argv(tmp_path, *flag))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"kolora train: error: {expected}")


def test_help_lists_choices_without_refusing_empty_values(tmp_path: Path) -> None:
    """Choices are shown, not enforced by argparse: '' must still mean "keep the profile's value" (Argo)."""
    args = build_parser(STAGES["train"]).parse_args(_train_argv(tmp_path, "--train.precision", ""))
    assert vars(args)["cfg:train.precision"] == ""


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("run.yaml", "train:\n  steps: 7\n  lora_target_modules: [to_q]\ngenerate:\n  prompts_file: null\n"),
        ("run.json", json.dumps({"train": {"steps": 7, "lora_target_modules": ["to_q"]}, "generate": {"prompts_file": None}})),
        ("run.toml", '[train]\nsteps = 7\nlora_target_modules = ["to_q"]\n'),
    ],
)
def test_config_files_in_yaml_json_or_toml(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    config = load_config("smoke", tmp_path / name)
    assert (config.train.steps, config.train.lora_target_modules) == (7, ["to_q"])


@pytest.mark.parametrize(("name", "kind"), [("bad.toml", "TOML"), ("bad.json", "JSON"), ("bad.yaml", "YAML")])
def test_a_broken_config_file_names_itself_and_its_format(tmp_path: Path, name: str, kind: str) -> None:
    (tmp_path / name).write_text("train: [steps = \n", encoding="utf-8")
    with pytest.raises(KoloraError, match=rf"config file .*{name} is not valid {kind}"):
        load_config("smoke", tmp_path / name)


def test_submit_sends_a_toml_config_as_the_yaml_the_pods_read(tmp_path: Path) -> None:
    from kolora_core.cli.submit import parse_parameters

    (tmp_path / "run.toml").write_text('[train]\nsteps = 7\n\n[ingest]\ncaption = "二次元"\n', encoding="utf-8")
    sent = parse_parameters([], tmp_path / "run.toml")["config"]
    assert yaml.safe_load(sent) == {"train": {"steps": 7}, "ingest": {"caption": "二次元"}}


def test_help_and_a_typo_from_the_command_line() -> None:
    """What a user types: the help on stdout (exit 0), a typo as one line on stderr (exit 2)."""
    run = [sys.executable, "-m", "jobs.train"]
    shown = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: python -m jobs.train --trainset DIR")
    assert "--train.steps INT" in shown.stdout and shown.stderr == ""
    dirs = ["--trainset", "ts", "--models", "m", "--lora", "out"]
    typo = subprocess.run([*run, *dirs, "--train.stpes", "7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and typo.stdout == ""
    assert typo.stderr.splitlines() == [
        "kolora train: error: unknown flag --train.stpes: did you mean --train.steps? (--help lists the flags)"
    ]


def test_help_loads_no_ml_framework() -> None:
    """Every stage's --help and --help-all, and importing every jobs/ module, without torch & co (seconds each)."""
    code = (
        "import sys, importlib\n"
        "from kolora_core.stage_cli import build_parser\n"
        "from kolora_core.stages import STAGES\n"
        "for stage in STAGES.values():\n"
        "    importlib.import_module(stage.module)\n"
        "    build_parser(stage).format_help(); build_parser(stage, full=True).format_help()\n"
        "heavy = ('torch', 'diffsynth', 'transformers', 'data_juicer', 'modelscope', 'numpy', 'PIL', 'safetensors')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


PREVIEWED = ["--train.steps", "3", "--train.learning_rate", "1e-4", "--ingest.caption", "'2026'", "--generate.steps", ""]


def test_kolora_config_prints_what_a_stage_resolves_from_the_same_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README says `kolora config` prints what defaults <- profile <- --config <- flags resolve to; the flags were
    'unrecognized arguments'."""
    assert main(["config", "--profile", "smoke", *PREVIEWED]) == 0
    printed = capsys.readouterr().out
    stage = config_from_args(build_parser(STAGES["train"]).parse_args(_train_argv(tmp_path, "--profile", "smoke", *PREVIEWED)))
    assert printed == dump_config(stage)
    assert (stage.train.steps, stage.train.learning_rate, stage.ingest.caption) == (3, 1e-4, "2026")
    assert stage.generate.steps == load_config("smoke").generate.steps  # '' keeps the profile's value
    path = tmp_path / "copied.yaml"  # still usable as a --config file
    path.write_text(printed, encoding="utf-8")
    assert main(["config", "--profile", "smoke", "--config", str(path)]) == 0
    assert capsys.readouterr().out == printed


def test_kolora_config_refuses_a_bad_flag_value_and_an_abbreviated_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--profile", "smoke", "--train.steps", "yes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kolora config: error: command-line flags: config field 'train.steps': ")
    with pytest.raises(SystemExit) as exit_info:  # `--train.ste` must not silently mean `--train.steps`
        main(["config", "--train.ste", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == (
        "kolora config: error: unknown flag --train.ste: did you mean --train.steps? (--help lists the flags)\n"
    )


def test_kolora_config_with_p_prints_what_the_runs_stages_resolve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kolora run -p steps=7 -p rank=4 --config run.yaml` reaches every stage as `--config run.yaml --train.steps 7
    --train.lora_rank 4` (the templates' flags): `kolora config` given the same -p prints what those stages resolve."""
    overlay = tmp_path / "run.yaml"
    overlay.write_text("train:\n  lora_alpha: 2\ningest:\n  caption: a red fox\n", encoding="utf-8")
    argv = ["--profile", "smoke", "--config", str(overlay)]
    assert main(["config", *argv, "-p", "steps=7", "-p", "rank=4", "-p", "caption="]) == 0
    printed = capsys.readouterr().out
    stage = config_from_args(
        build_parser(STAGES["train"]).parse_args(_train_argv(tmp_path, *argv, "--train.steps", "7", "--train.lora_rank", "4"))
    )
    assert printed == dump_config(stage)
    assert (stage.train.steps, stage.train.lora_rank, stage.train.lora_alpha, stage.ingest.caption) == (7, 4, 2, "a red fox")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "stepz=7"], "-p stepz: unknown parameter; did you mean steps?"),  # the closest, not all 23
        (["-p", "zzzq=7"], "-p zzzq: unknown parameter; choose from profile, config, "),
        (["-p", "steps=many"], "-p parameters: config field 'train.steps': "),
        (["-p", "steps=7", "--train.lora_rank", "4"], "give either -p parameters or --SECTION.FIELD flags, not both"),
        (["--profile", "full", "-p", "profile=smoke"], "--profile full and -p profile=smoke disagree; give one"),
    ],
)
def test_kolora_config_with_p_refuses_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"kolora config: error: {message}"), err
