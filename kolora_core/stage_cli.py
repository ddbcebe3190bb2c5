"""The shared shell of every stage CLI: flags, config, input checks, atomic outputs, one-line errors.

`jobs/<stage>.py` only supplies the stage's work function; this module makes all stages behave the
same way, which is what lets the runner, the containers and Argo treat them alike:

* flags: `--profile`, `--config FILE`, one `--<section>.<field>` flag per config field, and one
  `--<artifact> DIR` flag per input/output directory from `kolora_core.stages`. A flag given as
  the empty string keeps the profile's value (Argo parameters cannot be "unset").
* inputs must be complete outputs of an earlier stage (they carry a `_SUCCESS` marker).
* outputs are written to `<dir>/.partial/` and moved into place only when the work succeeded,
  followed by the `_SUCCESS` marker; a crashed run leaves no marker, and a rerun starts clean.
* a `KoloraError` prints one line and exits 2; anything else prints the traceback and exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kolora_core.config import RunConfig, available_profiles, dump_config, load_config
from kolora_core.config.flags import FlagParser, add_config_flags, help_all_action
from kolora_core.errors import KoloraError
from kolora_core.logs import stage_logging
from kolora_core.stages import COMPLETE_MARKER, STAGES, Stage

StageWork = Callable[[RunConfig, dict[str, Path], dict[str, Path]], None]
log = logging.getLogger("kolora")
PARTIAL = ".partial"


def build_parser(stage: Stage, full: bool = False) -> argparse.ArgumentParser:
    """The stage's flags; `--help` describes its own config sections (`Stage.config_sections`), `--help-all` all."""
    parser = FlagParser(
        prog=f"python -m {stage.module}",
        usage=f"%(prog)s {' '.join(f'--{n} DIR' for n in (*stage.inputs, *stage.outputs))} [--profile NAME] [--config FILE] "
        "[--SECTION.FIELD VALUE ...]",
        description=f"kolora {stage.name}: {stage.summary}",
        error_prefix=f"kolora {stage.name}",
    )
    parser.add_argument("--help-all", action=help_all_action(lambda: build_parser(stage, full=True)))
    parser.add_argument(
        "--profile", default="full", metavar="NAME", help=f"config profile: {', '.join(available_profiles())} (default: full)"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="run config (YAML, JSON or TOML) overlaid on the profile")
    io = parser.add_argument_group("directories")
    for name in stage.inputs:
        io.add_argument(f"--{name}", type=Path, required=True, metavar="DIR", help=f"input: {name} (output of an earlier stage)")
    for name in stage.outputs:
        io.add_argument(f"--{name}", type=Path, required=True, metavar="DIR", help=f"output: {name}")
    add_config_flags(parser, stage.config_sections, full)
    return parser


def _parse_flag_value(flag: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise KoloraError(f"flag --{flag}: '{raw}' is not a valid YAML value") from None


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = {
        key.removeprefix("cfg:"): _parse_flag_value(key.removeprefix("cfg:"), value)
        for key, value in vars(args).items()
        if key.startswith("cfg:") and value not in (None, "")
    }
    return load_config(args.profile, args.config, overrides)


def check_input(name: str, path: Path) -> None:
    """Refuse missing or half-written inputs before any expensive work starts.

    Complete means a `_SUCCESS` marker in the directory, or in every subdirectory for the merged
    outputs of a fanned-out stage.
    """
    if not path.exists():
        raise KoloraError(f"input --{name} {path} does not exist: pass the output directory of the stage that makes {name}")
    if not path.is_dir():
        raise KoloraError(f"input --{name} {path} is not a directory")
    if (path / COMPLETE_MARKER).exists():
        return
    shards = [p for p in path.iterdir() if p.is_dir()]
    if shards and all((p / COMPLETE_MARKER).exists() for p in shards):
        return  # a fanned-out stage: one complete output per shard (e.g. images/shard-0, shard-1)
    raise KoloraError(f"input --{name} {path} has no {COMPLETE_MARKER} marker: the stage that wrote it did not finish; rerun it")


def prepare_output(out: Path) -> Path:
    """The staging dir where `out`'s files are written before `commit_output` moves them in (also `kolora champion`'s)."""
    if out.exists() and not out.is_dir():
        raise KoloraError(f"output {out} exists and is not a directory")
    staging = out / PARTIAL
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    return staging


def commit_output(out: Path, staging: Path, producer: str, config: RunConfig | None = None) -> None:
    """Move the staged files into `out`, then write `_SUCCESS` (producer, time, config hash, file list) last."""
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    for entry in staging.iterdir():
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)
    staging.rmdir()
    marker = {
        "stage": producer,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_sha256": hashlib.sha256(dump_config(config).encode()).hexdigest() if config else None,
        "files": files,
    }
    tmp = out / f"{COMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / COMPLETE_MARKER)


def resolve_work(work: StageWork | str) -> StageWork:
    """The work function; a `module:function` reference is imported only when the stage runs, so `--help` and
    flag errors return at once instead of after torch and diffsynth load (seconds)."""
    if not isinstance(work, str):
        return work
    module, _, name = work.partition(":")
    return getattr(importlib.import_module(module), name)


def stage_main(stage_name: str, work: StageWork | str, argv: list[str] | None = None) -> int:
    """Parse, validate, run `work(config, inputs, staged_outputs)`, commit outputs; return the exit code.

    `work` is the function or its `module:function` reference (what `jobs/` pass: see `resolve_work`). Logging
    is the stage's for the duration (`kolora_core.logs`: third-party noise at debug level).
    """
    stage = STAGES[stage_name]
    args = build_parser(stage).parse_args(argv)  # --help and flag errors print before the stage's logging starts
    with stage_logging():
        return _run_stage(stage, work, args)


def _run_stage(stage: Stage, work: StageWork | str, args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        inputs = {name: getattr(args, name.replace("-", "_")) for name in stage.inputs}
        for name, path in inputs.items():
            check_input(name, path)
        outputs = {name: getattr(args, name.replace("-", "_")) for name in stage.outputs}
        staged = {name: prepare_output(path) for name, path in outputs.items()}
        started = time.perf_counter()
        resolve_work(work)(config, inputs, staged)
        for name, path in outputs.items():
            commit_output(path, staged[name], stage.name, config)
        log.info("%s finished in %.1f s", stage.name, time.perf_counter() - started)
        return 0
    except KoloraError as exc:
        print(f"kolora {stage.name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"kolora {stage.name}: interrupted; outputs were not committed", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line must name the stage, whatever broke
        traceback.print_exc()
        print(f"kolora {stage.name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
