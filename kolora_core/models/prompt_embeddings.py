"""The story prompts' ChatGLM3 embeddings, made once by train and reused by generate (the `prompt-embeddings` artifact).

ChatGLM3-6B is 12.5 GB: loading it costs every generate pod a read of that size (plus its GPU memory while the
prompts are encoded) for a few dozen short texts. Train already has it loaded to encode the captions, so it also
encodes every story prompt and negative prompt of `generate.prompts` (`encode_story`) and writes them here;
generate takes each text it needs from this directory and loads the text encoder only for texts it does not find
(prompts changed since training, another base model, another dtype) or when the directory is absent.

    prompt-embeddings/
      prompt_embeddings.json          format, encoder, text_encoder_sha256, dtype, texts [{index, text}] (or skipped)
      prompt_embeddings.safetensors   hidden.<index> (256, hidden), pooled.<index> (hidden), in that dtype

An entry is used only when it was made by the same encoding (`ENCODER`: diffsynth's KolorsPrompter, 256 tokens,
hidden_states[-2], pooled = last token of hidden_states[-1]) from the same text-encoder bytes (the sha256 of the
model directory's text encoder files, `ModelDir.text_encoder_fingerprint`) in the dtype generate runs ChatGLM in;
on the same kind of device the embeddings are then the ones generate would compute (bit for bit when the batch of
texts is the same; other batchings differ by float rounding only, as batched rendering already does). The
directory comes through the artifact store, so it is read as untrusted data: safetensors and JSON only, every
tensor checked for shape, dtype and finiteness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kolora_core.config import GenerateConfig
from kolora_core.errors import KoloraError

log = logging.getLogger("kolora.prompts")
FORMAT = "kolora-prompt-embeddings-v1"
ENCODER = "diffsynth-1.1.9 KolorsPrompter: ChatGLM3, 256 tokens, hidden_states[-2], pooled hidden_states[-1][-1]"
MANIFEST_FILE = "prompt_embeddings.json"
TENSOR_FILE = "prompt_embeddings.safetensors"
TOKENS = 256  # KolorsPrompter pads every text to 256 tokens
ENCODE_BATCH = 16

Embedding = tuple[torch.Tensor, torch.Tensor]  # (encoder_hidden_states (1, 256, hidden), add_text_embeds (1, hidden))


def story_texts(generate: GenerateConfig) -> list[str]:
    """Every prompt and negative prompt of the whole story (all shards), each once, prompts first."""
    texts = [p.prompt for p in generate.prompts] + [p.negative_prompt for p in generate.prompts]
    return list(dict.fromkeys(texts))


@torch.no_grad()
def encode_texts(
    prompter: Any, texts: Sequence[str], device: str | torch.device, batch: int = ENCODE_BATCH
) -> dict[str, Embedding]:
    """`KolorsPrompter.encode_prompt` as `SDXLImagePipeline` calls it, `batch` texts per call, in the weights' dtype."""
    todo = list(dict.fromkeys(texts))
    found: dict[str, Embedding] = {}
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        pooled, emb = prompter.encode_prompt(chunk, clip_skip=1, clip_skip_2=2, positive=True, device=str(device))
        for i, text in enumerate(chunk):
            found[text] = (emb[i : i + 1].clone(), pooled[i : i + 1].clone())
    return found


def write_prompt_embeddings(
    out: Path, embeddings: dict[str, Embedding], text_encoder_sha256: str, skipped: str | None = None
) -> None:
    """The artifact; with `skipped` (why train did not encode) an empty one that generate reads as "encode yourself"."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    texts = list(embeddings)
    dtypes = {str(emb.dtype).removeprefix("torch.") for emb, _ in embeddings.values()}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "encoder": ENCODER,
        "text_encoder_sha256": text_encoder_sha256,
        "dtype": dtypes.pop() if len(dtypes) == 1 else None,
        "texts": [{"index": i, "text": text} for i, text in enumerate(texts)],
        "skipped": skipped,
    }
    tensors: dict[str, torch.Tensor] = {}
    for i, text in enumerate(texts):
        emb, pooled = embeddings[text]
        tensors[f"hidden.{i}"] = emb[0].detach().cpu().contiguous()
        tensors[f"pooled.{i}"] = pooled[0].detach().cpu().contiguous()
    save_file(tensors, str(out / TENSOR_FILE), metadata={"format": FORMAT})
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Lookup:
    """What `read_prompt_embeddings` found: the usable embeddings (on the CPU), and why the rest are not usable."""

    embeddings: dict[str, Embedding]
    refused: str | None = None


def read_prompt_embeddings(directory: Path | None, text_encoder_sha256: str, dtype: torch.dtype, width: int) -> Lookup:
    """The embeddings of `directory` that generate may use instead of running its own text encoder (`width`: its
    hidden size, `ModelDir.text_encoder_width`; an artifact of the same encoder bytes holding another is damaged)."""
    if directory is None:
        return Lookup({}, "no prompt-embeddings input")
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KoloraError(f"{manifest_path} is not a prompt-embeddings manifest ({exc}): rerun train") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KoloraError(f"{manifest_path} is not a {FORMAT} manifest: rerun train with this kolora version")
    wanted = {"encoder": ENCODER, "text_encoder_sha256": text_encoder_sha256, "dtype": str(dtype).removeprefix("torch.")}
    if manifest.get("skipped"):
        return Lookup({}, f"train wrote none ({manifest['skipped']})")
    differs = [key for key, value in wanted.items() if manifest.get(key) != value]
    if differs:
        return Lookup({}, f"made with another {' and '.join(differs)} ({', '.join(str(manifest.get(k)) for k in differs)})")
    return Lookup(_tensors(directory, manifest, dtype, width))


def _tensors(directory: Path, manifest: dict[str, Any], dtype: torch.dtype, width: int) -> dict[str, Embedding]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / TENSOR_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise KoloraError(f"{path} cannot be read ({exc}): rerun train") from None
    entries = manifest.get("texts")
    if not isinstance(entries, list):
        raise KoloraError(f"{directory / MANIFEST_FILE}: 'texts' is not a list: rerun train")
    found: dict[str, Embedding] = {}
    for entry in entries:
        index, text = (entry.get("index"), entry.get("text")) if isinstance(entry, dict) else (None, None)
        hidden, pooled = tensors.get(f"hidden.{index}"), tensors.get(f"pooled.{index}")
        if not isinstance(text, str) or hidden is None or pooled is None:
            raise KoloraError(f"{path}: entry {entry!r} has no text or no hidden/pooled tensors: rerun train")
        good = hidden.shape == (TOKENS, width) and pooled.shape == (width,) and hidden.dtype == pooled.dtype == dtype
        if not good or not (torch.isfinite(hidden).all() and torch.isfinite(pooled).all()):
            raise KoloraError(
                f"{path}: the embedding of text {index} has shape {tuple(hidden.shape)} / {tuple(pooled.shape)} and dtype "
                f"{hidden.dtype}, expected ({TOKENS}, {width}) / ({width},) finite {dtype}: rerun train"
            )
        found[text] = (hidden.unsqueeze(0), pooled.unsqueeze(0))
    return found
