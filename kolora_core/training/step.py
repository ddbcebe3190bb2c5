"""One optimizer step of the fast engine on one device: eager, or replayed from a CUDA graph.

Why graphs: at batch 1 the Kolors UNet step is ~15,000 small kernels, and launching them from Python took longer
than running them (GPU busy 0.19 s of a 0.5-0.9 s step). A CUDA graph records the whole step once (forward,
backward, GradScaler, fused AdamW) and replays it with one launch. What makes the step capturable:

* no host synchronisation anywhere in it: the batch is built outside the graph from pinned host tensors
  (`to_device`), the loss is read back only every `train.log_every` steps, AdamW is `fused` + `capturable`
  (its step counters live on the GPU), and GradScaler's inf check and scale update are device ops when the
  optimizer is fused (it passes the scale and the found-inf flag into the fused kernel instead of reading them);
* static addresses: the step's inputs are copied into buffers captured once; the LoRA weights, their gradients
  (allocated by the captured backward), the optimizer moments and the loss scale are updated in place;
* autocast without its weight-cast cache (a cached cast from a warm-up step would be a stale address).

The first `warmup_steps` steps run eagerly on a side stream (real steps on real data, as PyTorch's whole-network
capture recipe asks: they create cuBLAS workspaces, the optimizer state and the loss scale); the step after is
captured and every later step replays it. Replays compute what the eager step computes, kernel for kernel, so a
graphed run and an eager run of the same steps give the same LoRA (checked on the GPU, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch

WARMUP_STEPS = 3


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host -> device without waiting for the GPU: pinned staging, asynchronous copy (a no-op on CPU)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def cuda_graph_capture(step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Record `step` as a CUDA graph: (replay, the loss tensor each replay overwrites). Nothing runs yet."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    return graph.replay, loss


@contextlib.contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Warm-up steps before a capture run on a side stream (PyTorch's whole-network capture recipe)."""
    if device.type != "cuda":
        yield
        return
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


class TrainStep:
    """`step(inputs) -> loss`: forward, backward and optimizer step; the returned loss tensor stays valid."""

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        autocast: Callable[[], AbstractContextManager],
        *,
        graphs: bool,
        warmup_steps: int = WARMUP_STEPS,
        capture: Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]] = cuda_graph_capture,
    ) -> None:
        self.module, self.optimizer, self.scaler, self.autocast = module, optimizer, scaler, autocast
        self.graphs = graphs
        self.warmup_steps = warmup_steps
        self.capture = capture
        self.eager_steps = 0
        self._replay: Callable[[], None] | None = None
        self._static_inputs: list[torch.Tensor] = []
        self._static_loss: torch.Tensor | None = None

    def compute(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Forward, backward, optimizer step (gradients are left for the caller to drop)."""
        with self.autocast():
            loss = self.module(*inputs)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def _eager(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        loss = self.compute(inputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.eager_steps += 1
        return loss

    def __call__(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.graphs:
            return self._eager(inputs)
        if self._replay is None and self.eager_steps < self.warmup_steps:
            with _side_stream(inputs[0].device):
                loss = self._eager(inputs)
            return loss.clone()
        if self._replay is None:
            self._static_inputs = [t.detach().clone() for t in inputs]
            self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates (assigns) the gradients
            self._replay, self._static_loss = self.capture(lambda: self.compute(self._static_inputs))
        for static, value in zip(self._static_inputs, inputs, strict=True):
            static.copy_(value)
        assert self._replay is not None and self._static_loss is not None
        self._replay()
        return self._static_loss.clone()  # the next replay overwrites the static loss
