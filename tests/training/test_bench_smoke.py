"""bench/train_bench.py runs end to end on CPU with the tiny models (the H100 run uses the same code)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def test_bench_prints_one_json_line_per_measurement(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "train_bench.py"
    spec = importlib.util.spec_from_file_location("train_bench", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name, value in {
        "BENCH_RES": "64",
        "BENCH_TRAIN_STEPS": "2",
        "BENCH_TRAIN_WARMUP": "1",
        "BENCH_IMAGES": "2",
        "BENCH_VARIANTS": "b1,b2+bf16+prof",
    }.items():
        monkeypatch.setenv(name, value)
    bench.main(["--tiny"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    what = [line["what"] for line in lines]
    assert what == [
        "env",
        "built_random_models",
        "kolora_cache",
        "unet_forward_tflops",
        "kolora_train",
        "kolora_train",
        "kernel_profile",
    ]
    assert [line["variant"] for line in lines[-3:]] == ["b1", "b2+bf16+prof", "b2+bf16+prof"]
    for line in lines[-3:-1]:
        assert line["images_per_s"] > 0 and line["seconds_per_step"] > 0 and "error" not in line
        assert len(line["losses"]) == 2 and line["compile"] is False and line["cuda_graphs"] is False
    assert lines[2]["captions_encoded"] == 1 and lines[2]["latents_encoded"] == 2
    profiled = lines[-1]  # on the CPU: the aten operators' own time, by the kinds the GPU profile uses
    assert {"gemm", "convolution", "attention"} <= set(profiled["by_kind"])
    assert sum(kind["share"] for kind in profiled["by_kind"].values()) == pytest.approx(1, abs=0.01)
    assert 0 < profiled["kernel_seconds_per_call"] <= profiled["wall_seconds_per_call"]
