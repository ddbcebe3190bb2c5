"""`kolora run` refuses, before any step, a GPU step this machine cannot run (the rendered pipeline, real configs).

Without the check a `--profile full` run on a machine without CUDA ingests, filters and downloads 18 GB of models
before the train stage refuses the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kolora_core.cli import main
from kolora_core.errors import KoloraError
from kolora_core.runner.engine import Engine, LineSink, StepRun
from kolora_core.runner.engines import ProcessEngine
from kolora_core.runner.gpu_check import check_gpu_steps, gpu_requirements
from kolora_core.runner.local import resolve_parameters
from kolora_core.runner.template import load_workflow

PIPELINE = Path(__file__).resolve().parents[2] / "workflows" / "dist" / "kolora-pipeline.yaml"
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts what happens on a machine without CUDA")


class FixedEngine(Engine):
    """An engine that answers `cuda_visible` as told and must never run a step."""

    name = "fixed"
    description = "test engine"

    def __init__(self, visible: bool | None) -> None:
        super().__init__()
        self.visible = visible

    def cuda_visible(self) -> bool | None:
        return self.visible

    def run(self, step: StepRun, sink: LineSink) -> int:
        raise AssertionError("no step may run")


def requirements(**given: str) -> list[tuple[str, str]]:
    workflow = load_workflow(PIPELINE)
    return gpu_requirements(workflow, resolve_parameters(workflow, given))


def test_the_full_profile_needs_a_gpu_for_train_only_and_smoke_for_nothing() -> None:
    assert requirements(profile="full") == [("train", "train.precision 16-mixed")]
    assert requirements(profile="smoke") == []


def test_the_run_config_parameter_is_part_of_the_decision() -> None:
    assert requirements(profile="full", config=json.dumps({"train": {"precision": "bf16-mixed"}})) == []
    assert requirements(profile="full", config="device: cpu\n") == []
    assert requirements(profile="smoke", config="device: cuda\n") == [("train", "device cuda"), ("generate", "device cuda")]


def test_a_gpu_step_is_refused_only_when_the_engine_sees_no_gpu() -> None:
    workflow = load_workflow(PIPELINE)
    parameters = resolve_parameters(workflow, {"profile": "full"})
    with pytest.raises(KoloraError) as refused:
        check_gpu_steps(workflow, parameters, FixedEngine(False))
    assert str(refused.value) == (
        "step train needs a CUDA GPU (train.precision 16-mixed, profile full) and engine fixed sees none on this "
        "machine: run --profile smoke here, or this profile on a GPU machine or the cluster (kolora submit)"
    )
    check_gpu_steps(workflow, parameters, FixedEngine(True))
    check_gpu_steps(workflow, parameters, FixedEngine(None))  # an engine that cannot tell refuses nothing


def test_device_cpu_with_a_gpu_only_precision_is_refused_on_any_machine() -> None:
    """A contradiction in the config itself: refused before any step even where a GPU is visible."""
    workflow = load_workflow(PIPELINE)
    parameters = resolve_parameters(workflow, {"profile": "full", "config": "device: cpu\n"})
    with pytest.raises(KoloraError) as refused:
        check_gpu_steps(workflow, parameters, FixedEngine(True))
    assert str(refused.value) == (
        "step train: train.precision 16-mixed needs a CUDA GPU but the config sets device cpu: set train.precision "
        "32-true or bf16-mixed, or device auto"
    )
    cpu_bf16 = json.dumps({"device": "cpu", "train": {"precision": "bf16-mixed"}})
    check_gpu_steps(workflow, resolve_parameters(workflow, {"profile": "full", "config": cpu_bf16}), FixedEngine(False))


@needs_no_cuda
def test_the_process_engine_asks_torch_in_the_steps_interpreter() -> None:
    assert ProcessEngine().cuda_visible() is False


@needs_no_cuda
def test_kolora_run_full_on_a_cpu_machine_stops_in_one_line_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert main(["run", "--profile", "full", "--runs-dir", str(runs)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kolora run: error: step train needs a CUDA GPU (train.precision 16-mixed")
    assert not runs.exists()  # no store started, no run directory: nothing ran
