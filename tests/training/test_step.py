"""The fast engine's step machinery on the CPU: compiled layers, the graph-replay bookkeeping, memory planning."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kolora_core.config import TrainConfig
from kolora_core.errors import KoloraError
from kolora_core.training import run as train_run
from kolora_core.training.memory import KOLORS_UNET_PARAMS, plan_memory
from kolora_core.training.step import TrainStep
from tests.training.helpers import LOSS_CSV_TOLERANCE, lora_max_diff, losses, train

GIB = 2**30


@pytest.mark.parametrize(("scope", "summarised"), [("true", True), ("whole", "whole")])
def test_compiled_unet_trains_the_eager_lora(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str, summarised: object
) -> None:
    """Compilation layer by layer or of the whole UNet (dynamo + AOT autograd; aot_eager runs the traced ops without
    C++ compilation) is the same function: same losses and LoRA as the eager step to fp32 rounding. Inductor
    itself: tests/training/test_gpu_step.py."""
    flags = ["--train.steps", "3", "--train.batch_size", "2", "--train.checkpoint_every", "0"]
    assert train(tiny_models, tiny_trainset, tmp_path / "eager", *flags) == 0
    monkeypatch.setattr(train_run, "COMPILE_BACKEND", "aot_eager")
    cache = tmp_path / "compile-cache"
    assert train(tiny_models, tiny_trainset, tmp_path / "compiled", *flags, "--train.compile", scope,
                 "--train.compile_cache_dir", str(cache)) == 0  # fmt: skip
    summary = json.loads((tmp_path / "compiled" / "train_summary.json").read_text())
    assert summary["compile"] == summarised and summary["cuda_graphs"] is False
    assert lora_max_diff(tmp_path / "compiled", tmp_path / "eager") <= 1e-6
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=LOSS_CSV_TOLERANCE)
    assert list(cache.glob("*/kolora-compile-key.json")), "the compile cache directory was set up"


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.layer(x), target)


def fake_capture(optimizer: torch.optim.Optimizer) -> Callable[..., tuple[Callable[[], None], torch.Tensor, object]]:
    """A replay that recomputes the captured step on its static inputs, with a captured graph's gradient
    semantics (the captured backward assigns the gradients it allocated; it never accumulates)."""

    def capture(step_fn: Callable[[], torch.Tensor], pool: object) -> tuple[Callable[[], None], torch.Tensor, object]:
        out = torch.zeros(2)

        def replay() -> None:
            optimizer.zero_grad(set_to_none=True)
            out.copy_(step_fn())

        return replay, out, "pool"

    return capture


def _runner(module: torch.nn.Module, graphs: bool, **options: object) -> TrainStep:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    return TrainStep(module, optimizer, None, lambda: torch.autocast("cpu", enabled=False), graphs=graphs,
                     warmup_steps=2, capture=fake_capture(optimizer), **options)  # fmt: skip


def test_replayed_steps_return_each_steps_own_loss_and_train_like_eager() -> None:
    torch.manual_seed(0)
    model = _Tiny()
    replayed = copy.deepcopy(model)
    batches = [[(torch.randn(3, 4), torch.randn(3, 4))] for _ in range(7)]
    eager, graphed = _runner(model, False), _runner(replayed, True)
    eager_losses = [float(eager(b)[0]) for b in batches]
    graphed_losses = [graphed(b) for b in batches]  # read back only at the end, as ProgressLog does
    assert [float(t[0]) for t in graphed_losses] == pytest.approx(eager_losses, abs=1e-7)
    assert graphed.eager_steps == 2 and graphed.captured == 1
    for a, b in zip(model.parameters(), replayed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)


def test_each_input_shape_gets_its_own_warm_up_and_graph() -> None:
    """Aspect buckets change the batch's shape: one graph per shape, each after its own eager warm-up."""
    torch.manual_seed(0)
    model = _Tiny()
    eager_model = copy.deepcopy(model)
    shapes = [3, 5, 3, 5, 3, 5, 3, 5]
    batches = [[(torch.randn(n, 4), torch.randn(n, 4))] for n in shapes]
    graphed, eager = _runner(model, True), _runner(eager_model, False)
    for batch in batches:
        assert float(graphed(batch)[0]) == pytest.approx(float(eager(batch)[0]), abs=1e-6)
    assert graphed.captured == 2 and graphed.eager_steps == 4, "2 warm-up steps per shape, then replays"


def test_n_micro_batches_step_like_one_batch_of_n() -> None:
    """Gradient accumulation: the same images split into 3 micro-batches give the one-batch step (to fp32 rounding)."""
    torch.manual_seed(0)
    whole, split = _Tiny(), _Tiny()
    split.load_state_dict(whole.state_dict())
    x, target = torch.randn(6, 4), torch.randn(6, 4)
    one, three = _runner(whole, False), _runner(split, False)
    for _ in range(3):
        loss_one = one([(x, target)])
        loss_three = three([(x[i : i + 2], target[i : i + 2]) for i in (0, 2, 4)])
        assert float(loss_three[0]) == pytest.approx(float(loss_one[0]), abs=1e-6)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_clipping_bounds_the_update_and_reports_the_norm() -> None:
    """max_grad_norm: the step sees gradients scaled to the norm (SGD makes the update the gradient itself)."""
    model = _Tiny()
    with torch.no_grad():
        model.layer.weight.fill_(3.0)
    x, target = torch.ones(2, 4) * 10, torch.zeros(2, 4)
    raw = copy.deepcopy(model)
    torch.nn.functional.mse_loss(raw.layer(x), target).backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in raw.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step = TrainStep(model, optimizer, None, lambda: torch.autocast("cpu", enabled=False), graphs=False, max_grad_norm=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    out = step([(x, target)])
    assert float(out[1]) == pytest.approx(float(norm), rel=1e-6) and float(norm) > 0.5
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert float(moved) == pytest.approx(0.5, rel=1e-5), "the applied update has the clipped norm"


def test_checkpointing_is_chosen_from_free_memory() -> None:
    auto = TrainConfig(batch_size=8)
    assert plan_memory(auto, KOLORS_UNET_PARAMS, 130 * GIB).gradient_checkpointing is False  # an H200
    assert plan_memory(auto, KOLORS_UNET_PARAMS, 40 * GIB).gradient_checkpointing is True  # a 48 GB card
    forced = TrainConfig(batch_size=8, gradient_checkpointing=True)
    assert plan_memory(forced, KOLORS_UNET_PARAMS, 130 * GIB).gradient_checkpointing is True


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"batch_size": 8}, ["train.batch_size", "train.resolution"]),
        ({"batch_size": 2, "gradient_checkpointing": False}, ["train.gradient_checkpointing", "train.batch_size"]),
    ],
)
def test_a_gpu_too_small_names_the_setting_to_lower(settings: dict[str, object], names: list[str]) -> None:
    with pytest.raises(KoloraError) as err:
        plan_memory(TrainConfig(**settings), KOLORS_UNET_PARAMS, 5 * GIB)
    for name in names:
        assert name in str(err.value)
    assert "GiB" in str(err.value)


def test_the_stage_refuses_before_the_first_step(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan runs before step 1: a GPU with too little free memory stops the stage with exit 2 and no steps."""

    def tiny_gpu(engine: train_run.FastEngine, unet: torch.nn.Module, compiled: bool) -> object:
        return plan_memory(engine.train, KOLORS_UNET_PARAMS, 1 << 20, compiled)

    monkeypatch.setattr(train_run.FastEngine, "_plan_memory", tiny_gpu)
    steps = []
    monkeypatch.setattr(train_run.FastEngine, "step", lambda self, step: steps.append(step))
    assert train(tiny_models, tiny_trainset, tmp_path / "lora", "--train.batch_size", "4") == 2
    assert "train.batch_size" in capsys.readouterr().err and steps == []
