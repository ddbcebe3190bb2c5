"""Image scorers for the evaluate stage, loaded from the `scorers` artifact that fetch-models writes.

`load_scorers` reads the scorers directory (`kolora_core.models.scorers`: manifest checked by sha256, the parts
the config names, the scorer identity for the report); `load_aesthetic`/`load_clip` load one model directory,
after the checks fetch-models ran on it too (`check_aesthetic`, `check_clip`: among them a shard index or processor
config that names a file outside it, `kolora_core.models.shard_index`).

* Aesthetic score: the LAION aesthetics predictor v2 (improved-aesthetic-predictor), i.e. an MLP of five
  Linear layers with no activations (dropout only while training) on the L2-normalised CLIP ViT-L/14 image
  embedding, on LAION's raw 1-10 scale. Loaded the way `simple-aesthetics-predictor`'s
  `AestheticsPredictorV2Linear` is built (a `CLIPVisionModelWithProjection` plus a `layers` Sequential), from
  either layout:
    - a snapshot of `shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE` (config.json, weights
      holding `vision_model.*`, `visual_projection.*` and `layers.*`, preprocessor_config.json), or
    - a CLIP ViT-L/14 directory (`openai/clip-vit-large-patch14`) plus LAION's head file
      (`sac+logos+ava1-l14-linearMSE.pth`, keys `layers.N.weight/bias`) copied into it.
  A config whose architectures name `AestheticsPredictorV2ReLU` gets ReLUs between the layers, as that class has.
* CLIP similarity: cosine similarity of image and prompt embeddings from a CLIP that reads the prompts as
  written (Chinese): `OFA-Sys/chinese-clip-vit-base-patch16` (transformers `ChineseCLIPModel`) is the
  documented choice. The families `kolora_core.models.scorers.clip_families` names load, each with the
  transformers classes named there: kolora picks them by config.json's model_type, never the folder's JSON
  (`processor_class`, `image_processor_type`, `tokenizer_class`, `auto_map`), which through the Auto classes could
  select any transformers class, some of which read files or download at load time (OneFormer's image processor
  reads its `class_info_file`).
"""

from __future__ import annotations

import itertools
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from kolora_core.config import EvaluateConfig
from kolora_core.errors import KoloraError
from kolora_core.models.scorers import (
    AESTHETIC,
    CLIP,
    FIELDS,
    HUB_KIND,
    RANDOM_KIND,
    TINY_KIND,
    HeadLayer,
    ScorersDir,
    check_aesthetic,
    check_clip,
    scorer_repos,
)
from kolora_core.models.shard_index import REDO

log = logging.getLogger("kolora.evaluate")
NOTES = {
    TINY_KIND: "these scores come from tiny RANDOM-WEIGHT scorers (models.source: tiny, the smoke profile): they "
    "prove that scoring, the gate and promotion are wired, not image quality, and the smoke threshold is not a quality bar",
    RANDOM_KIND: "these scores come from full-size RANDOM-WEIGHT scorers (models.source: random, an offline run or a "
    "benchmark): the real architectures' cost, not image quality",
}


class AestheticScorer(Protocol):
    name: str

    def score(self, images: list[Image.Image]) -> list[float]: ...


class SimilarityScorer(Protocol):
    name: str

    def similarity(self, images: list[Image.Image], texts: list[str]) -> list[float]: ...


@contextmanager
def _quiet_transformers() -> Any:
    """Loading a predictor snapshot into CLIPVisionModelWithProjection warns about the unused `layers.*`: expected."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def build_head(layers: list[HeadLayer], relu: bool) -> torch.nn.Sequential:
    """The Linear chain in index order (shapes already checked by `read_head`), ReLUs between them for the ReLU variant."""
    modules: list[torch.nn.Module] = []
    for position, layer in enumerate(layers):
        out_features, in_features = layer.weight.shape
        linear = torch.nn.Linear(in_features, out_features, bias=layer.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(layer.weight)
            if layer.bias is not None:
                linear.bias.copy_(layer.bias)
        modules.append(linear)
        if relu and position < len(layers) - 1:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules).eval()


def _check_loaded(model: torch.nn.Module) -> None:
    """Raise the loaders' ValueError ("could not be loaded") for tensors `from_pretrained` left without data.

    Why: a shard index that sends a tensor to a shard of the folder that does not hold it passes
    `check_shard_indexes` (the shard is a file of the folder), and transformers then leaves the tensor on the meta
    device instead of failing; the model's `.to(device)` was a `NotImplementedError: Cannot copy out of meta
    tensor` traceback. Only which tensors tells the user what is wrong; no other error is caught for it.
    """
    empty = [name for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()) if tensor.is_meta]
    if empty:
        more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
        raise ValueError(f"its shard index sends {empty[0]}{more} to files that do not hold them; rerun fetch-models")


def _image_processor(directory: Path, image_size: int) -> Any:
    from transformers import CLIPImageProcessor

    if (directory / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(str(directory))
    log.info("no preprocessor_config.json in %s: CLIP's standard preprocessing at %d px", directory, image_size)
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


class LaionAesthetic:
    """LAION aesthetics predictor v2: normalised CLIP image embedding -> Linear chain -> score (1-10 scale)."""

    def __init__(self, vision: torch.nn.Module, head: torch.nn.Sequential, processor: Any, device: str, name: str) -> None:
        self.vision, self.head, self.processor, self.device, self.name = vision, head, processor, device, name

    @torch.no_grad()
    def embed(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]
        embeds = self.vision(pixel_values=pixels.to(self.device)).image_embeds.float()
        return embeds / embeds.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def score(self, images: list[Image.Image]) -> list[float]:
        return [float(s) for s in self.head(self.embed(images)).squeeze(-1).cpu()]


def load_aesthetic(directory: Path, device: str = "cpu", source: str | None = None, fix: str = REDO) -> LaionAesthetic:
    """`source` names the model in messages and the report (its hub repo); the directory path by default. `fix` ends
    a refusal of the folder's files (`ScorersDir.fix`)."""
    from transformers import CLIPVisionModelWithProjection

    source = source or str(directory)
    vision_config, layers = check_aesthetic(directory, source, fix)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    relu = any("relu" in str(a).lower() for a in config.get("architectures") or [])
    try:
        with _quiet_transformers():
            vision = CLIPVisionModelWithProjection.from_pretrained(str(directory), dtype=torch.float32)
        _check_loaded(vision)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise KoloraError(f"aesthetic model {source} ({directory}): no CLIP vision weights could be loaded ({reason})") from None
    processor = _image_processor(directory, vision_config.image_size)
    return LaionAesthetic(vision.to(device).eval(), build_head(layers, relu).to(device), processor, device, source)


class ClipSimilarity:
    """Cosine similarity between each image and its prompt, in one CLIP's joint embedding space."""

    def __init__(self, model: Any, processor: Any, device: str, name: str) -> None:
        self.model, self.processor, self.device, self.name = model, processor, device, name
        text_config = getattr(model.config, "text_config", None)
        limit = getattr(text_config, "max_position_embeddings", None) or 77
        self.max_length = min(limit, getattr(processor.tokenizer, "model_max_length", limit) or limit)

    @torch.no_grad()
    def similarity(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """Paired (image i, text i) cosine similarities from the model's own forward (its `image_embeds`/`text_embeds`).

        Not `get_text_features`: in transformers 4.57 `ChineseCLIPModel.get_text_features` reads a pooler that
        ChineseCLIPModel does not build and fails (transformers PR #42351); the forward takes the [CLS] state.
        """
        pixels = self.processor.image_processor(images=[i.convert("RGB") for i in images], return_tensors="pt")["pixel_values"]
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        outputs = self.model(pixel_values=pixels.to(self.device), **{k: v.to(self.device) for k, v in tokens.items()})
        image, text = outputs.image_embeds.float(), outputs.text_embeds.float()
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return [float(s) for s in (image * text).sum(-1).cpu()]


def load_clip(directory: Path, device: str = "cpu", source: str | None = None, fix: str = REDO) -> ClipSimilarity:
    """`source` names the model in messages and the report (its hub repo); the directory path by default. `fix` ends
    a refusal of the folder's files (`ScorersDir.fix`). The classes are the family's (`check_clip`)."""
    source = source or str(directory)
    family = check_clip(directory, source, fix)
    try:
        model = family.model.from_pretrained(str(directory), dtype=torch.float32)
        _check_loaded(model)
        processor = family.processor(
            image_processor=family.image_processor.from_pretrained(str(directory)),
            tokenizer=family.tokenizer.from_pretrained(str(directory)),
        )
    except (OSError, ValueError) as exc:
        raise KoloraError(f"CLIP model {source} ({directory}) could not be loaded: {' '.join(str(exc).split())}") from None
    return ClipSimilarity(model.to(device).eval(), processor, device, source)


@dataclass
class Scorers:
    """What evaluate scores with: each scorer, or None and why not; `facts` is the report's `scorers` record."""

    aesthetic: AestheticScorer | None
    clip: SimilarityScorer | None
    not_scored: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def load_scorers(directory: Path, evaluate: EvaluateConfig, device: str) -> Scorers:
    """The scorers the config names, from the scorers artifact, after checking that it holds what the config says.

    Every file is checked against its sha256 first: the scorer identity in the report claims these exact
    bytes, and they came through the artifact store. A part set to null in the config is not scored (even
    when the artifact has it); a part the config names but the artifact lacks, or holds from another repo
    or revision, is an error: scores from other weights would not compare with the champion's.
    """
    scorers = ScorersDir(directory)
    manifest = scorers.read_manifest(verify="sha256")
    repos, loaders = scorer_repos(evaluate), {AESTHETIC: load_aesthetic, CLIP: load_clip}
    loaded: dict[str, Any] = {}
    not_scored = {part: f"{FIELDS[part]} is null: not scored" for part in (AESTHETIC, CLIP) if part not in repos}
    for part, repo in repos.items():
        if part not in scorers.present():
            raise KoloraError(
                f"{repo.field} names {repo.reference} but the scorers input {directory} holds no {part} model: "
                "rerun fetch-models with this config"
            )
        recorded = manifest["sources"].get(part) or {}
        wanted = {"repo": repo.reference, "revision": repo.revision}
        if manifest["kind"] == HUB_KIND and {k: recorded.get(k) for k in wanted} != wanted:
            raise KoloraError(
                f"{repo.field} is {repo.reference} at revision {repo.revision or 'default'} but the scorers input "
                f"{directory} holds {recorded.get('repo')} at revision "
                f"{recorded.get('revision') or 'default'}: rerun fetch-models with this config"
            )
        loaded[part] = loaders[part](scorers.part(part), device, scorers.source(part), scorers.fix(part))
    facts: dict[str, Any] = {
        "identity": scorers.fingerprint(),
        "kind": manifest["kind"],
        **{part: manifest["sources"].get(part) if part in loaded else None for part in (AESTHETIC, CLIP)},
    }
    if manifest["kind"] in NOTES:
        facts["note"] = NOTES[manifest["kind"]]
    return Scorers(loaded.get(AESTHETIC), loaded.get(CLIP), not_scored, facts)
