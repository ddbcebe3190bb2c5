"""Full-size random Kolors weights in the files Kolors ships, for `models.source: random` (a whole run, offline).

Benchmarks and offline end-to-end runs need the real architectures (the FLOPs, the memory, the 12.5 GB load)
without a download. `write_random_kolors` writes the model directory `fetch-models` would download
(`kolora_core.models.layout`), in the same on-disk formats, so the unchanged loader (`loading.py`:
diffsynth's `ModelManager.load_models`, detection by state-dict keys and shapes) reads it:

* `kolors/text_encoder/`: ChatGLM3-6B as Kwai-Kolors/Kolors ships it (the THUDM chatglm3 layout):
  config.json (architectures `ChatGLMModel`, which diffsynth's folder detector maps to
  `kolors_text_encoder`), seven fp16 `pytorch_model-0000N-of-00007.bin` shards of at most 2 GB with
  `pytorch_model.bin.index.json`, keys prefixed `transformer.` as chatglm3's own checkpoint has them
  (transformers strips the prefix when loading the base model), and the tokenizer files, copied from the
  ChatGLM3 tokenizer that diffsynth 1.1.9 bundles (`tokenizer_configs/kolors/tokenizer`: tokenizer.model,
  tokenizer_config.json, vocab.txt), which is also what `KolorsPrompter` reads. Not written: the repo's
  Python files (configuration/modeling/tokenization_chatglm.py, quantization.py; kolora never runs repo code)
  and hence no `auto_map` in config.json.
* `kolors/unet/diffusion_pytorch_model.safetensors`: the Kolors UNet in diffusers names, fp16 (names and
  shapes from diffusers' own `UNet2DConditionModel` built from Kolors' unet/config.json values).
* `sdxl-vae-fp16-fix/`: diffusion_pytorch_model.safetensors (fp32, diffusers `AutoencoderKL` names) and
  config.json, as AI-ModelScope/sdxl-vae-fp16-fix publishes them.

Values: matrices N(0, 0.02), norm weights 1, every other parameter 0 (the seed baseline's rule, which keeps
fp16 activations finite through 28 ChatGLM layers and the UNet); buffers (ChatGLM's rotary `inv_freq`) are
the model's own. Each tensor has its own generator seeded from (seed, name), so the bytes depend on nothing
but the seed and the architecture: tensors are made in parallel and written one by one (the UNet file
streamed, `safetensors_stream.py`; each text-encoder shard saved when complete), never the 12.5 GB at once.
`tests/models/test_random_kolors.py` proves on the meta device that each file is what diffsynth detects and
converts to its Kolors models, and loads a reduced-size directory written by this code end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kolora_core.models.layout import ModelDir
from kolora_core.models.safetensors_stream import write_safetensors

RANDOM_ARCHITECTURE = "kolors-random-v1"
WEIGHT_STD = 0.02
TEXT_ENCODER_PREFIX = "transformer."  # chatglm3's checkpoint keys: ChatGLMForConditionalGeneration.transformer.*
TEXT_ENCODER_SHARD = "2GB"  # chatglm3-6b: 12.5 GB in seven shards
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "vocab.txt")
IN_FLIGHT_BYTES = 2 << 30  # tensors being made at once (the fetch-models pod has 8 GiB)

# ChatGLM3-6B (THUDM/chatglm3-6b-base config.json, as Kolors ships it), in diffsynth's ChatGLMConfig terms.
# use_cache off: diffsynth's prompter needs no cache, and transformers 4.57 with the cache on fails on this model.
CHATGLM3_6B: dict[str, Any] = {
    "num_layers": 28,
    "hidden_size": 4096,
    "ffn_hidden_size": 13696,
    "num_attention_heads": 32,
    "kv_channels": 128,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "padded_vocab_size": 65024,
    "seq_length": 32768,
    "add_qkv_bias": True,
    "original_rope": True,
    "use_cache": False,
    "rmsnorm": True,
    "layernorm_epsilon": 1e-5,
    "apply_residual_connection_post_layernorm": False,
    "post_layer_norm": True,
    "add_bias_linear": False,
    "torch_dtype": "float16",
    "architectures": ["ChatGLMModel"],
}
# Kwai-Kolors/Kolors unet/config.json (diffusers UNet2DConditionModel): SDXL's UNet with ChatGLM's 4096-wide
# text projected to 2048 (encoder_hid_proj) and a 4096 + 6 x 256 = 5632-wide added-condition embedding.
KOLORS_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 5632,
    "encoder_hid_dim": 4096,
    "encoder_hid_dim_type": "text_proj",
    "act_fn": "silu",
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
# AI-ModelScope/sdxl-vae-fp16-fix (madebyollin's) config.json: SDXL's VAE, rescaled to run in fp16.
SDXL_VAE_FP16_FIX: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.13025,
    "force_upcast": False,
}


@dataclass(frozen=True)
class KolorsSpec:
    """The three architectures a random model directory is written with (full size: the real Kolors configs)."""

    text_encoder: dict[str, Any] = field(default_factory=lambda: dict(CHATGLM3_6B))
    unet: dict[str, Any] = field(default_factory=lambda: dict(KOLORS_UNET))
    vae: dict[str, Any] = field(default_factory=lambda: dict(SDXL_VAE_FP16_FIX))
    text_encoder_shard: str = TEXT_ENCODER_SHARD


FULL = KolorsSpec()


# --- values ------------------------------------------------------------------------------------------------------


def init_kind(name: str, ndim: int) -> str:
    """The seed baseline's rule, shared with the in-memory benchmark models: "one", "normal" or "zero"."""
    if "norm" in name.lower() and name.endswith("weight"):
        return "one"
    return "normal" if ndim >= 2 else "zero"


def tensor_seed(seed: int, name: str) -> int:
    """One generator seed per (seed, tensor name): values independent of order, threads and other tensors."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def random_value(name: str, like: torch.Tensor, seed: int, std: float = WEIGHT_STD) -> torch.Tensor:
    """The value of parameter `name` (shape and dtype of `like`, which may live on the meta device), on the CPU."""
    kind = init_kind(name, like.dim())
    if kind == "one":
        return torch.ones(like.shape, dtype=like.dtype)
    if kind == "zero":
        return torch.zeros(like.shape, dtype=like.dtype)
    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    return torch.randn(like.shape, generator=generator).mul_(std).to(like.dtype)


def init_module_(module: torch.nn.Module, std: float = WEIGHT_STD) -> torch.nn.Module:
    """The same rule in place on a materialised module, drawing from the global RNG on its device (fast, in memory)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            kind = init_kind(name, param.dim())
            if kind == "one":
                param.fill_(1.0)
            elif kind == "normal":
                param.normal_(0, std)
            else:
                param.zero_()
    return module


def materialise_module(module: torch.nn.Module, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A module built under `empty_skeleton` (parameters on meta, buffers computed) allocated on `device` in
    `dtype` and filled by `init_module_`, its buffers kept (`to_empty` alone would leave them uninitialised)."""
    buffers = {name: b.detach().clone() for name, b in module.named_buffers() if not b.is_meta}
    module = init_module_(module.to_empty(device=device).to(dtype))
    with torch.no_grad():
        for name, value in buffers.items():
            module.get_buffer(name).copy_(value)
    return module


def materialise(
    skeleton: Iterable[tuple[str, torch.Tensor]], seed: int, workers: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, value) in the skeleton's order: meta tensors get `random_value`, real ones (buffers) are kept.

    Made on a thread pool (torch's generators release the GIL) with at most `IN_FLIGHT_BYTES` in flight."""

    def make(item: tuple[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
        name, like = item
        return name, random_value(name, like, seed) if like.is_meta else like.detach().clone()

    pending: deque[tuple[Future, int]] = deque()
    in_flight = 0
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        for item in skeleton:
            size = item[1].numel() * item[1].element_size()
            while pending and in_flight + size > IN_FLIGHT_BYTES:
                future, done = pending.popleft()
                in_flight -= done
                yield future.result()
            pending.append((pool.submit(make, item), size))
            in_flight += size
        while pending:
            yield pending.popleft()[0].result()


# --- skeletons (names, shapes, dtypes; parameters on the meta device) ---------------------------------------------


def chatglm_config(values: dict[str, Any]) -> Any:
    from diffsynth.models.kolors_text_encoder import ChatGLMConfig

    return ChatGLMConfig(**values)


def empty_skeleton(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` with its parameters on the meta device and its buffers (ChatGLM's rotary inv_freq) computed."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()


def text_encoder_module(values: dict[str, Any]) -> torch.nn.Module:
    """diffsynth's ChatGLMModel of `values` under `empty_skeleton`."""
    from diffsynth.models.kolors_text_encoder import ChatGLMModel

    return empty_skeleton(lambda: ChatGLMModel(chatglm_config(values), empty_init=False))


def text_encoder_skeleton(values: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ChatGLM3's checkpoint keys (`transformer.` prefix) -> fp16 meta parameters and the real buffers."""
    return {TEXT_ENCODER_PREFIX + k: v.to(torch.float16) for k, v in text_encoder_module(values).state_dict().items()}


def _diffusers_skeleton(cls: Callable[..., torch.nn.Module], values: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    with torch.device("meta"):
        model = cls(**values).to(dtype)
    if any(not t.is_meta for t in model.state_dict().values()):  # a computed buffer would be written as random
        raise ValueError(f"{cls.__name__} has buffers in its state dict: materialise them before writing")
    return model


def unet_skeleton(values: dict[str, Any]) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel with Kolors' config, fp16 (the dtype of Kolors' unet file), on meta."""
    from diffusers import UNet2DConditionModel

    return _diffusers_skeleton(UNet2DConditionModel, values, torch.float16)


def vae_skeleton(values: dict[str, Any]) -> torch.nn.Module:
    """diffusers' AutoencoderKL with the fp16-fix VAE's config, fp32 (as that repo stores it), on meta."""
    from diffusers import AutoencoderKL

    return _diffusers_skeleton(AutoencoderKL, values, torch.float32)


def tensor_specs(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in state.items()]


# --- writing -----------------------------------------------------------------------------------------------------


def tokenizer_dir() -> Path:
    """ChatGLM3's tokenizer as diffsynth 1.1.9 bundles it (what KolorsPrompter loads)."""
    import diffsynth

    return Path(diffsynth.__file__).parent / "tokenizer_configs" / "kolors" / "tokenizer"


def shard_plan(state: dict[str, torch.Tensor], shard: str) -> Any:
    """huggingface_hub's split (transformers' own): `pytorch_model-0000N-of-0000M.bin` files of at most `shard`."""
    from huggingface_hub import split_torch_state_dict_into_shards

    return split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin", max_shard_size=shard)


def write_text_encoder(out: Path, values: dict[str, Any], seed: int, shard: str, workers: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    chatglm_config(values).save_pretrained(out)  # config.json with architectures ChatGLMModel
    state = text_encoder_skeleton(values)
    split = shard_plan(state, shard)
    for file, names in split.filename_to_tensors.items():
        torch.save(dict(materialise(((n, state[n]) for n in names), seed, workers)), out / file)
    index = {"metadata": split.metadata, "weight_map": dict(sorted(split.tensor_to_filename.items()))}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir() / name, out / name)


def write_diffusers_weights(path: Path, model: torch.nn.Module, seed: int, workers: int | None) -> None:
    """One safetensors file in diffusers' names, streamed tensor by tensor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    write_safetensors(path, tensor_specs(state), materialise(state.items(), seed, workers), metadata={"format": "pt"})


def write_random_kolors(model_dir: ModelDir, seed: int, spec: KolorsSpec | None = None, workers: int | None = None) -> None:
    """The model directory of `models.source: random` (full size unless `spec` says otherwise), ending with its
    manifest (kind `random`)."""
    spec = spec or FULL
    write_text_encoder(model_dir.text_encoder, spec.text_encoder, seed, spec.text_encoder_shard, workers)
    write_diffusers_weights(model_dir.unet, unet_skeleton(spec.unet), seed, workers)
    vae = vae_skeleton(spec.vae)
    write_diffusers_weights(model_dir.vae, vae, seed, workers)
    vae.save_config(model_dir.vae.parent)  # config.json: kolora downloads the VAE's (VAE_PATTERNS), not the UNet's
    sources = {"architecture": RANDOM_ARCHITECTURE, "seed": seed, "torch": torch.__version__, "full_size": spec == FULL}
    model_dir.write_manifest("random", sources)
