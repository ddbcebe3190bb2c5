"""On a CUDA GPU (skipped elsewhere; the GPU benchmark run executes it): the compiled and graph-replayed step
trains the eager step's LoRA, on the tiny models through the train stage itself.

Tolerances: graph replay runs the eager step's kernels, so its LoRA equals the eager one to 1e-6 (seen: 16-mixed and
bf16-mixed on an H200); inductor's
fused kernels round differently (fp16 autocast), and AdamW's first steps turn any rounding difference into up
to +-lr per step, so compiled runs are held to a few steps' worth of lr (1e-4): 12 steps -> 2e-3, and the loss
curves to 2%.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.helpers import LOSS_CSV_TOLERANCE, lora_b_max, lora_max_diff, losses, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
STEPS = ["--device", "cuda", "--train.steps", "12", "--train.batch_size", "2", "--train.checkpoint_every", "0"]
# the smoke profile's learning rate: AdamW moves a weight by up to about this much a step whatever its gradient, so
# an element whose gradient is near zero turns any rounding difference into up to this; 12 steps move the tiny LoRA's
# B by ~1.1e-3 (CPU, 32-true), so a step that is dropped or applied twice still shows as ~10 of these
ADAM_STEP = 1e-4


def run(models: Path, trainset: Path, out: Path, *flags: str) -> dict[str, object]:
    assert train(models, trainset, out, *STEPS, *flags) == 0
    return json.loads((out / "train_summary.json").read_text())


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_graphed_and_compiled_steps_train_the_eager_lora(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, precision: str
) -> None:
    common = ["--train.precision", precision, "--train.gradient_checkpointing", "false"]
    off = ["--train.compile", "false", "--train.cuda_graphs", "false"]
    eager = run(tiny_models, tiny_trainset, tmp_path / "eager", *common, *off)
    graphs = run(tiny_models, tiny_trainset, tmp_path / "graphs", *common, "--train.compile", "false")
    both = run(tiny_models, tiny_trainset, tmp_path / "both", *common, "--train.compile", "true")
    whole = run(tiny_models, tiny_trainset, tmp_path / "whole", *common, "--train.compile", "whole")
    assert (eager["compile"], eager["cuda_graphs"]) == (False, False)
    assert (graphs["compile"], graphs["cuda_graphs"]) == (False, True)
    assert (both["compile"], both["cuda_graphs"]) == (True, True)
    assert (whole["compile"], whole["cuda_graphs"]) == ("whole", True)
    assert lora_max_diff(tmp_path / "graphs", tmp_path / "eager") <= 1e-6
    assert losses(tmp_path / "graphs") == pytest.approx(losses(tmp_path / "eager"), abs=LOSS_CSV_TOLERANCE)
    for compiled in ("both", "whole"):  # inductor's fused kernels round differently; AdamW makes that up to lr a step
        assert lora_max_diff(tmp_path / compiled, tmp_path / "eager") <= 2e-3
        assert losses(tmp_path / compiled) == pytest.approx(losses(tmp_path / "eager"), rel=2e-2)


def test_graphed_run_resumes_to_the_uninterrupted_lora(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kolora_core.training.run import CRASH_ENV

    flags = ["--train.checkpoint_every", "6", "--train.compile", "false"]
    run(tiny_models, tiny_trainset, tmp_path / "full", *flags)
    monkeypatch.setenv(CRASH_ENV, "8")
    assert train(tiny_models, tiny_trainset, tmp_path / "cut", *STEPS, *flags) == 1
    monkeypatch.delenv(CRASH_ENV)
    resumed = run(tiny_models, tiny_trainset, tmp_path / "cut", *flags)
    assert resumed["resumed_from"] == "step 6" and resumed["cuda_graphs"] is True
    # steps 6-8 run eagerly (warm-up) in the rerun but replayed in the uninterrupted run: in 32-true, cuBLAS may
    # pick other fp32 GEMM algorithms inside a capture (H200: 4.3e-6 on three machines)
    assert lora_max_diff(tmp_path / "cut", tmp_path / "full") <= ADAM_STEP
    assert lora_b_max(tmp_path / "full") >= 5 * ADAM_STEP


def test_checkpointing_with_graphs(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """Both asked for: checkpointing's recomputation inside a captured step trains the eager LoRA too."""
    flags = ["--train.compile", "false", "--train.gradient_checkpointing", "true"]
    run(tiny_models, tiny_trainset, tmp_path / "eager", *flags, "--train.cuda_graphs", "false")
    summary = run(tiny_models, tiny_trainset, tmp_path / "graphs", *flags, "--train.cuda_graphs", "true")
    assert summary["cuda_graphs"] is True and summary["gradient_checkpointing"] is True
    # 32-true, as in the resume test: 1.1e-5 on one H200, above the former 2e-5 bound on another (value not kept)
    assert lora_max_diff(tmp_path / "graphs", tmp_path / "eager") <= ADAM_STEP
    assert lora_b_max(tmp_path / "eager") >= 5 * ADAM_STEP
