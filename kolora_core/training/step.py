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
from typing import Any

import torch

WARMUP_STEPS = 3


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host -> device without waiting for the GPU: pinned staging, asynchronous copy (a no-op on CPU)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def cuda_graph_capture(step: Callable[[], torch.Tensor], pool: Any = None) -> tuple[Callable[[], None], torch.Tensor, Any]:
    """Record `step` as a CUDA graph in memory `pool` (None: a new one): (replay, the output each replay overwrites,
    the pool for the next shape's graph). Nothing runs yet."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = step()
    return graph.replay, out, graph.pool()


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
    """`step(micro_batches) -> [loss, grad norm]`: forward and backward of each micro-batch, then the optimizer step;
    the returned tensor stays valid (grad norm is NaN when nothing asked for it).

    Options that live inside the step, so inside a captured graph: gradient accumulation (the micro-batches'
    losses are divided by their number, so N micro-batches give the gradient of one batch of N), gradient
    clipping and the norm (device-side `clip_grad_norm_` arithmetic after GradScaler's `unscale_`; the loss scale
    is a power of two, so unscaling before the fused step changes no bit), and the EMA update after the step.

    Graphs are per input shape (aspect buckets give a few): each shape runs `warmup_steps` eager steps, then is
    captured into one memory pool shared by all shapes. Sharing is safe here because nothing one replay makes is
    read after another replay: the output is cloned at once, and each replay reassigns the gradients it uses.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        autocast: Callable[[], AbstractContextManager],
        *,
        graphs: bool,
        warmup_steps: int = WARMUP_STEPS,
        capture: Callable[..., tuple[Callable[[], None], torch.Tensor, Any]] = cuda_graph_capture,
        max_grad_norm: float | None = None,
        want_grad_norm: bool = False,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.module, self.optimizer, self.scaler, self.autocast = module, optimizer, scaler, autocast
        self.graphs = graphs
        self.warmup_steps = warmup_steps
        self.capture = capture
        self.max_grad_norm = max_grad_norm
        self.want_grad_norm = want_grad_norm or max_grad_norm is not None
        self.after_step = after_step
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.eager_steps = 0
        self._warm: dict[tuple, int] = {}
        self._graphs: dict[tuple, tuple[Callable[[], None], list[torch.Tensor], torch.Tensor]] = {}
        self._pool: Any = None

    @property
    def captured(self) -> int:
        """How many shapes have a graph."""
        return len(self._graphs)

    def compute(self, micro_batches: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """Forward and backward of every micro-batch, clipping, optimizer step, EMA (gradients are left for the
        caller to drop); returns [mean loss, grad norm]."""
        n = len(micro_batches)
        total: torch.Tensor | None = None
        for inputs in micro_batches:
            with self.autocast():
                loss = self.module(*inputs)
            part = loss / n if n > 1 else loss
            (self.scaler.scale(part) if self.scaler is not None else part).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        norm = torch.full_like(total, float("nan"))
        if self.want_grad_norm:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
            else:
                norm = grad_total_norm(self.params)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        return torch.stack([total / n if n > 1 else total, norm.to(total.dtype)])

    def _eager(self, micro_batches: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        out = self.compute(micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        self.eager_steps += 1
        return out

    def __call__(self, micro_batches: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        if not self.graphs:
            return self._eager(micro_batches)
        flat = [t for inputs in micro_batches for t in inputs]
        key = tuple((tuple(t.shape), t.dtype) for t in flat)
        if key not in self._graphs and self._warm.get(key, 0) < self.warmup_steps:
            self._warm[key] = self._warm.get(key, 0) + 1
            with _side_stream(flat[0].device):
                out = self._eager(micro_batches)
            return out.clone()
        if key not in self._graphs:
            static = [t.detach().clone() for t in flat]
            sizes = [len(inputs) for inputs in micro_batches]
            nested = [static[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]
            self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates (assigns) the gradients
            replay, out, self._pool = self.capture(lambda: self.compute(nested), self._pool)
            self._graphs[key] = (replay, static, out)
        replay, static, out = self._graphs[key]
        for buffer, value in zip(static, flat, strict=True):
            buffer.copy_(value)
        replay()
        return out.clone()  # the next replay overwrites the static output


def grad_total_norm(params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """The gradients' total L2 norm, on the device (no sync)."""
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
