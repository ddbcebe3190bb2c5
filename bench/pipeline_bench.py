"""The whole pipeline's wall time, stage by stage, as a cluster pays it (issue 12.4): every stage is its own process.

Runs the stage CLIs (`python -m jobs.<stage>`, the containers' entry points) in the DAG's order in one work dir:
ingest, filter, fetch-models, train, generate, evaluate, and the champion directory of a model's first release.
No store sits between them (artifacts stay directories), so the figures are the stages' own: Python start, model
loading, caching, the steps, decoding. With `--images N` it first draws N seed-sized pictures (1024x1024) into a
folder source, so the `full` profile's filter keeps them; the pictures are not timed. Prints one JSON line per
stage, the train stage's own phases from `train_summary.json`, then the total:

    python bench/pipeline_bench.py                                  # smoke profile, tiny models: the CPU figure
    python bench/pipeline_bench.py --profile full --images 16 -- --models.source random   # a GPU, offline

Arguments after `--` go to every stage (every stage accepts every config flag). `--models.source random` writes
full-size random Kolors in the real formats (about 18 GB in the work dir) and needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.filter_bench import draw  # noqa: E402 - after the path insert
from kolora_core import commit  # noqa: E402
from kolora_core.release.champion import fetch_champion  # noqa: E402
from kolora_core.stages import COMPLETE_MARKER, STAGES  # noqa: E402
from kolora_core.storage.objects import LocalStorage  # noqa: E402

ORDER = ("ingest", "filter", "fetch-models", "train", "generate", "evaluate")
SEED_SIZE = (1024, 1024)


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def stage_argv(name: str, work: Path, profile: str, extra: list[str]) -> list[str]:
    """The stage's command line from the stage table: each artifact is `work/<artifact>`."""
    stage = STAGES[name]
    argv = [sys.executable, "-m", stage.module, "--profile", profile]
    for artifact in (*stage.inputs, *stage.outputs, *stage.resumable):
        argv += [f"--{artifact}", str(work / artifact)]
    return argv + extra


def stage_env() -> dict[str, str]:
    """This environment with the checkout importable by the stage processes (`python -m jobs.<stage>`)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def committed(out: Path, fill: Callable[[Path], object]) -> Path:
    """`out` as a committed directory that `fill(staging_dir)` writes; one an earlier bench run committed is kept
    (the random full-size models take minutes to write)."""
    if not (out / COMPLETE_MARKER).is_file():
        staged = commit.begin(out, "bench")
        fill(staged)
        commit.commit(out, staged, {"stage": "bench"})
    return out


def write_first_champion(work: Path, name: str) -> None:
    """`champion/` as `kolora champion` writes it for a model with no release yet (an empty release store)."""
    committed(work / "champion", lambda staged: fetch_champion(LocalStorage(work / "empty-store"), "models", name, staged))


def draw_source(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        draw(index, SEED_SIZE).save(folder / f"{index:04d}.png")
    return folder


def train_phases(work: Path) -> dict[str, object]:
    summary = work / "lora" / "train_summary.json"
    if not summary.is_file():
        return {}
    data = json.loads(summary.read_text(encoding="utf-8"))
    phases = {f"{phase}_s": seconds for phase, seconds in data.get("timings", {}).items()}
    keep = ("steps", "seconds", "images_per_second", "device", "precision", "compile", "cuda_graphs", "peak_gpu_gib")
    return {**phases, **{k: data[k] for k in keep if k in data}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage_flags", nargs="*", metavar="-- FLAGS", help="config flags for every stage, after --")
    parser.add_argument("--profile", default="smoke", help="config profile of every stage (default: smoke)")
    parser.add_argument("--images", type=int, default=0, help="draw this many 1024 px pictures as the dataset (0: the profile's)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep every artifact here (default: a temp dir)")
    parser.add_argument("--name", default="kolora", help="the model name of the champion lookup (default: kolora)")
    parser.add_argument(
        "--stages",
        default=",".join(ORDER),
        help="comma-separated stages to run, in ORDER; the others' artifacts must be in --workdir already (e.g. a "
        "trainset made where Data-Juicer is installed, for a GPU machine without it)",
    )
    args = parser.parse_args(argv)
    extra = list(args.stage_flags)
    stages = [name for name in ORDER if name in args.stages.split(",")]
    if unknown := set(args.stages.split(",")) - set(ORDER):
        parser.error(f"--stages: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kolora-pipeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.images and "ingest" in stages:
        extra = ["--ingest.source", str(draw_source(work / "source", args.images)), *extra]
    write_first_champion(work, args.name)
    env = stage_env()
    total = time.perf_counter()
    for name in stages:
        started = time.perf_counter()
        log = work / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w", encoding="utf-8") as out:
            command = stage_argv(name, work, args.profile, extra)
            rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        emit(what="pipeline_stage", stage=name, seconds=round(time.perf_counter() - started, 2), rc=rc, profile=args.profile)
        if rc != 0:
            print(f"pipeline_bench: {name} failed (exit {rc}); its log {log}:", file=sys.stderr)
            print("\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:]), file=sys.stderr)
            return rc
        if name == "train":
            emit(what="train_phases", **train_phases(work))
    seconds = round(time.perf_counter() - total, 2)
    emit(what="pipeline", profile=args.profile, stages=len(stages), seconds=seconds, workdir=str(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
