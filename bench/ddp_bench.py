"""Training throughput on 1 and N GPUs of one host through the train stage itself (issue 17); one JSON line per run.

Each run is `python -m jobs.train` (Fabric DDP with `train.devices`, the path a multi-GPU pod takes: one process
per rank, the global batch split across ranks, steps stay optimizer steps) on a models directory: full-size
random Kolors in the real formats (`--source random`, ~18 GB written once into the work dir) or the tiny models
(`--source tiny`, a CPU smoke test with gloo). The training set is `--images` random pictures at `--res`.
Throughput is the steady state: images over the second half of the run, from the elapsed seconds `train_log.csv`
records at each step (compilation, graph capture and NCCL start-up excluded); peak GPU memory is
`train_summary.json`'s. For every devices > 1 the line carries the scaling efficiency against the 1-device run
of the same per-device batch, and with `--equivalence` the LoRA of N devices x batch B is compared with one
device x batch N*B (same seed: the same images, noise and timesteps; only the all-reduce's float order differs).

    python bench/ddp_bench.py --devices 1,2 --batch 1,8 --steps 60 -- --train.precision bf16-mixed   # 2 GPUs
    python bench/ddp_bench.py --source tiny --profile smoke --res 64 --devices 1,2 --batch 1 --steps 4     # CPU

Arguments after `--` go to every run. Keep NVLink multicast off on lent machines (NCCL_NVLS_ENABLE=0).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline_bench import committed, emit, stage_env  # noqa: E402 - after the path insert
from bench.train_bench import write_trainset  # noqa: E402
from kolora_core.config import load_config  # noqa: E402
from kolora_core.lora.format import load_lora  # noqa: E402
from kolora_core.models.fetch import fetch_models  # noqa: E402


def steady_images_per_s(log_csv: Path, global_batch: int) -> float | None:
    """Images/s over the second half of the run, from `train_log.csv`'s elapsed seconds at each step."""
    rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(log_csv.read_text(encoding="utf-8").splitlines())]
    if len(rows) < 2:
        return None
    (step_a, sec_a), (step_b, sec_b) = rows[len(rows) // 2 - (len(rows) % 2 == 0)], rows[-1]
    return round((step_b - step_a) * global_batch / (sec_b - sec_a), 3) if sec_b > sec_a else None


def lora_max_diff(a: Path, b: Path) -> float:
    first, second = load_lora(a / "lora.safetensors"), load_lora(b / "lora.safetensors")
    return max(float((first.tensors[k].float() - second.tensors[k].float()).abs().max()) for k in first.tensors)


def run_train(
    work: Path, models: Path, trainset: Path, devices: int, batch: int, args: argparse.Namespace, extra: list[str]
) -> tuple[Path, float | None]:
    """One `python -m jobs.train` run; its JSON line, its LoRA directory and steady images/s (None if it failed: a
    reused work dir may still hold an earlier run's log there)."""
    out = work / f"lora-d{devices}-b{batch}"
    flags = ["--train.devices", str(devices), "--train.batch_size", str(batch), "--train.steps", str(args.steps)]
    flags += ["--train.log_every", str(args.log_every), "--train.checkpoint_every", "0", "--train.resolution", str(args.res)]
    command = [sys.executable, "-m", "jobs.train", "--profile", args.profile, "--trainset", str(trainset)]
    checkpoints = work / f"ckpt-d{devices}-b{batch}"
    command += ["--models", str(models), "--lora", str(out), "--checkpoints", str(checkpoints), *flags, *extra]
    env = stage_env()
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    log = work / f"train-d{devices}-b{batch}.log"
    with log.open("w", encoding="utf-8") as handle:
        rc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-1:]
        emit(what="ddp_train", devices=devices, batch_per_device=batch, error=f"exit {rc}: {' '.join(tail)}", log=str(log))
        return out, None
    summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    rate = steady_images_per_s(out / "train_log.csv", devices * batch)
    emit(
        what="ddp_train",
        devices=devices,
        batch_per_device=batch,
        global_batch=devices * batch,
        res=args.res,
        steps=args.steps,
        images_per_s=rate,
        peak_gpu_gib=summary.get("peak_gpu_gib"),
        precision=summary.get("precision"),
        compile=summary.get("compile"),
        cuda_graphs=summary.get("cuda_graphs"),
        seconds=summary.get("seconds"),
    )
    return out, rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_flags", nargs="*", metavar="-- FLAGS", help="config flags for every run, after --")
    parser.add_argument("--source", choices=("random", "tiny"), default="random", help="models.source (default: random)")
    parser.add_argument("--profile", default="full", help="config profile of the runs (default: full)")
    parser.add_argument("--devices", default="1,2", help="comma list of train.devices (default: 1,2)")
    parser.add_argument("--batch", default="1,8", help="comma list of per-device batch sizes (default: 1,8)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default: 60)")
    parser.add_argument("--log-every", type=int, default=5, help="train.log_every: a log row every N steps (default: 5)")
    parser.add_argument("--images", type=int, default=64, help="training pictures (default: 64)")
    parser.add_argument("--res", type=int, default=1024, help="training resolution (default: 1024)")
    parser.add_argument("--equivalence", action="store_true", help="also 1 device x the largest global batch; LoRA diff")
    parser.add_argument("--workdir", type=Path, default=None, help="models, trainset and runs (default: a temp dir)")
    args = parser.parse_args(argv)
    extra = list(args.train_flags)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kolora-ddp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    devices = [int(d) for d in args.devices.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    emit(what="env", gpus=torch.cuda.device_count(), gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    models_config = load_config(args.profile, overrides={"models.source": args.source}).models
    models = committed(work / f"models-{args.source}", lambda staged: fetch_models(models_config, staged))
    trainset = committed(work / "trainset", lambda staged: write_trainset(staged, args.images, args.res))
    for batch in batches:
        single: float | None = None
        for count in devices:
            _, rate = run_train(work, models, trainset, count, batch, args, extra)
            if count == 1:
                single = rate
            elif rate and single:
                emit(what="ddp_scaling", devices=count, batch_per_device=batch, efficiency=round(rate / single, 3))
        if args.equivalence and max(devices) > 1:
            many = max(devices)
            reference, _ = run_train(work, models, trainset, 1, many * batch, args, extra)
            diff = lora_max_diff(reference, work / f"lora-d{many}-b{batch}")
            emit(what="ddp_equivalence", devices=many, batch_per_device=batch, one_device_batch=many * batch, lora_max_diff=diff)
    return 0


if __name__ == "__main__":
    sys.exit(main())
