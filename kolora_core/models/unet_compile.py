"""Regional torch.compile of the Kolors UNet, shared by training and generation, and the compile cache.

Why regional: compiling the whole peft-wrapped Kolors UNet at once traced for over five minutes on an H100 host,
and every new process paid it again. The UNet is a stack of few distinct layers: 70 transformer layers of two
shapes and 23 ResNet blocks of 12 shapes. Compiling each layer in place, with static shapes, gives one graph per
distinct (layer, shape), shared by all layers of that shape, so warm-up is a few dozen small compilations that
the on-disk cache (`use_compile_cache`) turns into loads on the next run. Parameter names do not change (LoRA
files, merges and checkpoints see the same module paths).

`compile_unet(unet, "whole")` compiles the UNet as one graph instead: fusions across layer boundaries (measured on
an H200: +1.9% images/s training at batch 16, +2.8% generating) for a warm-up an order of magnitude longer (400 s
cold for training), because no graph is shared between layers. An explicit opt-in for long throughput runs only.

ResNet blocks take diffsynth's `res_stack` list as an argument, which dynamo would guard on (a recompile per
list length): their forward is rebound to one compiled function of the tensors they use (hidden states, time
embedding), and the pass-through arguments are returned around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import types
from pathlib import Path
from typing import Any, Literal

import torch
from diffsynth.models.sd_unet import BasicTransformerBlock, ResnetBlock

from kolora_core.stages import COMPILE_CACHE_ENV

CompileScope = bool | Literal["whole"]  # True: layer by layer; "whole": the UNet as one graph
log = logging.getLogger("kolora.compile")
CACHE_ENV = COMPILE_CACHE_ENV  # set by the workflow where it keeps the cache (kolora_core/stages.py)
DEFAULT_CACHE = Path.home() / ".cache" / "kolora" / "compile"
_KEY_FILE = "kolora-compile-key.json"
_RESNET_FUNCTIONS: dict[tuple[str, str | None], Any] = {}


def _resnet_tensors(block: ResnetBlock, hidden_states: torch.Tensor, time_emb: torch.Tensor | None) -> torch.Tensor:
    return ResnetBlock.forward(block, hidden_states, time_emb, None, None)[0]


def _compiled_resnet_forward(
    self: ResnetBlock, hidden_states: torch.Tensor, time_emb: torch.Tensor, text_emb: Any, res_stack: Any, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    return self._kolora_compiled(self, hidden_states, time_emb), time_emb, text_emb, res_stack


def compile_regions(unet: torch.nn.Module, *, backend: str = "inductor", mode: str | None = None) -> dict[str, int]:
    """Compile every transformer layer and ResNet block of `unet` in place; returns how many of each.

    `backend="aot_eager"` traces and differentiates exactly as inductor's path does but runs the ops eagerly:
    the CPU tests use it to check the compiled step's wiring without minutes of C++ compilation.
    """
    import torch._dynamo

    limits = torch._dynamo.config
    limits.cache_size_limit = max(limits.cache_size_limit, 64)  # 12 ResNet shapes x training/eval x batch shapes
    limits.accumulated_cache_size_limit = max(limits.accumulated_cache_size_limit, 1024)
    key = (backend, mode)
    if key not in _RESNET_FUNCTIONS:
        _RESNET_FUNCTIONS[key] = torch.compile(_resnet_tensors, backend=backend, mode=mode, dynamic=False)
    counts = {"transformer_layers": 0, "resnet_blocks": 0}
    for module in unet.modules():
        if isinstance(module, BasicTransformerBlock):
            module.compile(backend=backend, mode=mode, dynamic=False)
            counts["transformer_layers"] += 1
        elif isinstance(module, ResnetBlock):
            module._kolora_compiled = _RESNET_FUNCTIONS[key]
            module.forward = types.MethodType(_compiled_resnet_forward, module)
            counts["resnet_blocks"] += 1
    return counts


def compile_unet(unet: torch.nn.Module, scope: CompileScope, *, backend: str = "inductor", mode: str | None = None) -> None:
    """Compile `unet` in place: `True` layer by layer (`compile_regions`), "whole" as one graph, `False` not at all.

    In place either way (`nn.Module.compile`), so parameter names, LoRA merges and checkpoints see the same module.
    """
    if scope == "whole":
        unet.compile(backend=backend, mode=mode, dynamic=False)
        log.info("compiling the whole UNet as one graph")
    elif scope:
        counts = compile_regions(unet, backend=backend, mode=mode)
        log.info("compiling %(transformer_layers)d transformer layers and %(resnet_blocks)d ResNet blocks", counts)


def uncompile_unet(unet: torch.nn.Module) -> None:
    """Undo `compile_unet` (benchmarks compare compiled and eager variants on one model)."""
    unet._compiled_call_impl = None
    for module in unet.modules():
        if isinstance(module, BasicTransformerBlock):
            module._compiled_call_impl = None
        elif isinstance(module, ResnetBlock) and "forward" in module.__dict__:
            del module.forward, module._kolora_compiled


def compile_key() -> dict[str, str]:
    """What compiled artifacts depend on: the torch/triton build and the GPU. Another value means another cache."""
    key = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    try:
        import triton

        key["triton"] = triton.__version__
    except ImportError:
        key["triton"] = "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        key["gpu"] = f"{props.name} sm{props.major}{props.minor} {props.multi_processor_count}SM"
    else:
        key["gpu"] = "cpu"
    return key


def use_compile_cache(configured: str | None) -> Path:
    """Point inductor's (and triton's) on-disk caches at `<dir>/<key hash>/` before the first compilation.

    `<dir>` is the configured directory, else $KOLORA_COMPILE_CACHE, else ~/.cache/kolora/compile; keep it where
    the workflow keeps its models (a volume or an object-store key synced around the stage) and the next run
    loads the compiled kernels instead of compiling them. Artifacts of another torch/triton/GPU live under another
    hash and are never loaded: when the directory holds only such, one log line says so. The directory is as
    trusted as the model weights next to it (it holds generated code): never point it at user-supplied data.
    """
    root = Path(configured or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    key = compile_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    here = root / digest
    others = [p for p in root.glob(f"*/{_KEY_FILE}") if p.parent != here] if root.is_dir() else []
    if others and not here.exists():
        try:
            other = json.loads(others[0].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            other = {"unreadable": str(others[0])}
        log.info("compile cache %s was made for %s, not %s: ignored, compiling afresh into %s", root, other, key, here)
    here.mkdir(parents=True, exist_ok=True)
    (here / _KEY_FILE).write_text(json.dumps(key, sort_keys=True) + "\n", encoding="utf-8")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(here / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(here / "triton")
    import torch._functorch.config as functorch
    import torch._inductor.config as inductor

    for config, name in ((inductor, "fx_graph_cache"), (inductor, "autotune_local_cache"), (functorch, "enable_autograd_cache")):
        if hasattr(config, name):  # on by default in recent torch; set in case a build turned them off
            setattr(config, name, True)
    return here
