"""bench/ddp_bench.py on CPU (gloo) with the tiny models: the 2-GPU run of issue 17 uses the same code, so what it
prints must be right here first (rates from the log, scaling against the 1-device run, the LoRA comparison)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ddp_bench import main

pytestmark = pytest.mark.slow


def test_one_and_two_devices_with_scaling_and_the_lora_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--source", "tiny", "--profile", "smoke", "--res", "64", "--devices", "1,2", "--batch", "1", "--steps", "3"]
    argv += ["--images", "4", "--log-every", "1", "--equivalence", "--workdir", str(tmp_path), "--", "--train.num_workers", "0"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    runs = [line for line in lines if line["what"] == "ddp_train"]
    assert [(r["devices"], r["global_batch"]) for r in runs] == [(1, 1), (2, 2), (1, 2)]
    assert all("error" not in r and r["images_per_s"] > 0 for r in runs)
    (scaling,) = [line for line in lines if line["what"] == "ddp_scaling"]
    assert scaling["efficiency"] == pytest.approx(runs[1]["images_per_s"] / runs[0]["images_per_s"], abs=1e-3)
    (equivalence,) = [line for line in lines if line["what"] == "ddp_equivalence"]
    assert equivalence["lora_max_diff"] <= 1e-5, "the same images, noise and timesteps; only the all-reduce order differs"
