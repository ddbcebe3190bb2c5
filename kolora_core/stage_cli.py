"""The shared shell of every stage CLI: flags, config, input checks, atomic outputs, one-line errors.

`jobs/<stage>.py` only supplies the stage's work function; this module makes all stages behave the
same way, which is what lets the runner, the containers and Argo treat them alike:

* flags: `--profile`, `--config FILE`, one `--<section>.<field>` flag per config field, and one
  `--<artifact> DIR` flag per input/output directory from `kolora_core.stages`. A flag given as
  the empty string keeps the profile's value (Argo parameters cannot be "unset").
* inputs must be committed outputs of an earlier stage; files their `_SUCCESS` does not list are removed
  first (`kolora_core.commit.accept_input`), so a failed attempt's leftovers are never read. An optional input
  (`Stage.optional`: generate's `--prompt-embeddings`) whose directory does not exist counts as not given: one info
  line at the workflow's path for it (`Stage.input_path`: an optional artifact not supplied leaves nothing there),
  saying what the stage does instead (`Stage.without`), a warning for a path typed by hand.
* outputs are staged beside their directory (`<parent>/.staging/<name>`, outside every artifact path) and
  moved in only when the work succeeded, `_SUCCESS` last (`kolora_core.commit`): a failed attempt leaves the
  output directory empty (or as its previous commit), which is what Argo then uploads.
* uploads (`Stage.uploads`: ingest's `--source`) are the user's own files: optional and never pruned. With
  `--source-from NAME` (what the user named them by) the directory must exist; without, a directory that does not
  exist counts as not given: one info line for `--source-from ''` (the workflow's way of saying no upload was named:
  an optional Argo artifact that was not supplied leaves no path), a warning for a path typed without it.
  One that `kolora upload` wrote is checked against its `_SUCCESS` first (`kolora_core.upload_marker`).
* resumable outputs (`Stage.resumable`: train's `--checkpoints`, generate's `--progress`) are plain
  directories the stage keeps across attempts; the flag is optional and defaults to `<first output>.<name>` beside
  it (a container gets `/kolora/outputs/<name>` from its template). The work function finds them in its `outputs`
  mapping next to the staged outputs.
* a `KoloraError` prints one line and exits 2; anything else prints the traceback and exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from kolora_core import commit
from kolora_core.config import RunConfig, available_profiles, dump_config, flag_overrides, load_config
from kolora_core.config.flags import FlagParser, add_config_flags, help_all_action
from kolora_core.errors import KoloraError
from kolora_core.logs import stage_logging
from kolora_core.stages import CONTAINER_ROOT, STAGES, Stage
from kolora_core.upload_marker import check_upload

StageWork = Callable[[RunConfig, dict[str, Path], dict[str, Path]], None]
"""`work(config, inputs, outputs)`: `outputs` maps each output to its staging dir and each resumable output to its dir."""
log = logging.getLogger("kolora")


def _usage(name: str, stage: Stage) -> str:
    return f"[--{name} DIR]" if name in (*stage.optional, *stage.uploads) else f"--{name} DIR"


def build_parser(stage: Stage, full: bool = False) -> argparse.ArgumentParser:
    """The stage's flags; `--help` describes its own config sections (`Stage.config_sections`), `--help-all` all."""
    parser = FlagParser(
        prog=f"python -m {stage.module}",
        usage=f"%(prog)s {' '.join(_usage(n, stage) for n in (*stage.inputs, *stage.uploads, *stage.outputs))} "
        "[--profile NAME] [--config FILE] [--SECTION.FIELD VALUE ...]",
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
        required, optional = name not in stage.optional, " (optional)" if name in stage.optional else ""
        io.add_argument(
            f"--{name}", type=Path, required=required, metavar="DIR", help=f"input: {name} (output of an earlier stage){optional}"
        )
    for name in stage.uploads:
        help = f"input: {name}, your own files, read as they are (optional; a directory that does not exist is not given)"
        io.add_argument(f"--{name}", type=Path, metavar="DIR", help=help)
        help = f"what --{name}'s files were named by where they came from; set, they must be there ('' = none named)"
        io.add_argument(f"--{name}-from", metavar="NAME", help=help)
    for name in stage.outputs:
        required, optional = name not in stage.optional, " (optional)" if name in stage.optional else ""
        io.add_argument(f"--{name}", type=Path, required=required, metavar="DIR", help=f"output: {name}{optional}")
    for name in stage.resumable:
        default = f"<--{stage.outputs[0]}>.{name}"
        help = f"resumable: {name}, kept across attempts (default: {default})"
        io.add_argument(f"--{name}", type=Path, metavar="DIR", help=help)
    add_config_flags(parser, stage.config_sections, full)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    flags = {key.removeprefix("cfg:"): value for key, value in vars(args).items() if key.startswith("cfg:")}
    return load_config(args.profile, args.config, flag_overrides(flags))


def _resumable_dirs(stage: Stage, args: argparse.Namespace, outputs: dict[str, Path]) -> dict[str, Path]:
    """Given, or `<first output>.<name>` beside it (`runs/a/lora.checkpoints`): two runs by hand into one parent
    directory keep their own states. The templates pass the container paths explicitly."""
    first = next(iter(outputs.values()))
    return {name: getattr(args, name.replace("-", "_")) or first.parent / f"{first.name}.{name}" for name in stage.resumable}


def _present_inputs(stage: Stage, given: dict[str, Path | None]) -> dict[str, Path]:
    """The inputs given; an optional one whose directory does not exist is not given, with one log line. The
    templates pass every input's flag, at the input's container path, and an optional artifact the workflow did not
    supply (Argo's `optional: true`; the local runner's too) leaves nothing there: the workflow's normal case, said as
    what the stage does instead, not as an error. Any other path was typed by hand: a warning says it is not there.
    (A required input that does not exist is refused by `commit.accept_input`.)"""
    inputs = {name: given[name] for name in stage.inputs if given[name] is not None}
    for name in stage.optional:
        if name in inputs and not inputs[name].exists():
            path, instead = inputs.pop(name), f"{stage.name} {stage.without[name]}"
            if _workflow_path(stage, name, path):
                log.info("no %s input (none supplied at %s): %s", name, path, instead)
            else:
                log.warning("input --%s %s does not exist: %s; check the path", name, path, instead)
    return inputs


def _workflow_path(stage: Stage, name: str, path: Path) -> bool:
    """Whether `path` is where the templates put the input: `/kolora/inputs/<name>` (`Stage.input_path`), in a
    container or under the step's scratch directory (the local process engine's rewrite of /kolora)."""
    within = PurePosixPath(stage.input_path(name)).relative_to(CONTAINER_ROOT).parts
    return path.parts[-len(within) :] == within


def _uploads(stage: Stage, given: dict[str, Path | None], named: dict[str, str | None]) -> dict[str, Path]:
    """The uploads given as existing directories. One that does not exist is left out, unless it was named
    (`--<name>-from NAME`): then nothing arriving under that name is the user's mistake, said in one line. With
    `--<name>-from ''` it is the workflow's normal case (it passes every path; no upload named leaves none there), said
    as that, not as an error; without the flag the path was typed by hand and a warning says it is not there."""
    found: dict[str, Path] = {}
    for name in stage.uploads:
        path, origin = given[name], (named[name] or "").strip()
        what = f"the upload {origin!r} (--{name} {path})" if origin else f"input --{name} {path}"
        if path is None:
            if origin:
                raise KoloraError(f"--{name}-from {origin!r} needs --{name} DIR: the folder its files are in")
            continue
        if not path.exists():
            if origin:
                raise KoloraError(
                    f"the upload {origin!r} did not arrive (nothing at --{name} {path}): nothing is stored under that "
                    "name; check it (a typo? not uploaded yet?)"
                )
            instead = f"{stage.name} {stage.without[name]}"
            if named[name] is None:
                log.warning("input --%s %s does not exist: %s; check the path", name, path, instead)
            else:
                log.info("no --%s upload named (--%s-from is empty): %s", name, name, instead)
        elif not path.is_dir():
            hint = "an empty object (a folder marker): name the prefix without a trailing '/'" if not path.stat().st_size else ""
            raise KoloraError(f"{what} is a file, not a folder: {hint or 'name the folder that holds it'}")
        else:
            if origin:
                log.info("input --%s %s: the upload %r", name, path, origin)
            check_upload(path, f"the upload {origin!r}" if origin else f"input --{name} {path}")
            found[name] = path
    return found


def _refuse_overlaps(read: dict[str, Path], written: dict[str, Path]) -> None:
    """Every directory the stage writes must be apart from every other artifact: an output that is (or lies in) an
    input replaces or prunes what the stage is about to read, and two outputs in one place crash the commit only
    after all the work."""
    places = {name: path.resolve() for name, path in {**read, **written}.items()}
    for name in written:
        here = places[name]
        for other, where in places.items():
            if other == name:
                continue
            if here == where:
                raise KoloraError(f"--{name} and --{other} are the same directory ({where}): give each its own")
            if where in here.parents or here in where.parents:
                inner, outer = (name, other) if where in here.parents else (other, name)
                raise KoloraError(f"--{inner} {places[inner]} lies inside --{outer} {places[outer]}: give each its own directory")


def _make_dirs(dirs: dict[str, Path]) -> None:
    for name, path in dirs.items():
        if path.exists() and not path.is_dir():
            raise KoloraError(f"--{name} {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)


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
        given = {name: getattr(args, name.replace("-", "_")) for name in (*stage.inputs, *stage.uploads, *stage.outputs)}
        inputs = _present_inputs(stage, given)
        outputs = {name: given[name] for name in stage.outputs if given[name] is not None}
        resumable = _resumable_dirs(stage, args, outputs)
        uploads = _uploads(stage, given, {n: getattr(args, f"{n}_from".replace("-", "_")) for n in stage.uploads})
        _refuse_overlaps({**inputs, **uploads}, {**outputs, **resumable})
        for name, path in inputs.items():
            commit.accept_input(name, path)
        inputs.update(uploads)
        staged = {name: commit.begin(path, stage.name) for name, path in outputs.items()}
        _make_dirs(resumable)
        started = time.perf_counter()
        resolve_work(work)(config, inputs, {**staged, **resumable})
        marker = {"stage": stage.name, "config_sha256": hashlib.sha256(dump_config(config).encode()).hexdigest()}
        for name, path in outputs.items():
            commit.commit(path, staged[name], marker)
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
