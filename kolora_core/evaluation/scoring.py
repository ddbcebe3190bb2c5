"""Image scorers for the evaluate stage, loaded from local directories (an S3 artifact unpacked, or a download).

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
  documented choice; any transformers CLIP-family model whose forward returns `image_embeds`/`text_embeds`
  and that has an `AutoProcessor` (e.g. multilingual `BAAI/AltCLIP`) loads the same way.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from kolora_core.errors import KoloraError

log = logging.getLogger("kolora.evaluate")
_HEAD_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(weight|bias)$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


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


def _require_dir(directory: Path, what: str, flag: str) -> None:
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise KoloraError(f"{what} directory {directory} has no config.json: point {flag} at a model directory (or null to skip)")


def _head_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The `layers.N.*` tensors of one weight file, without reading the rest (a full CLIP file is 1.7 GB)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys() if _HEAD_KEY.match(k)}  # noqa: SIM118 - not a dict
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch.save files cannot be memory-mapped
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and _HEAD_KEY.match(k)}


def head_state(directory: Path) -> dict[str, torch.Tensor]:
    """`layers.N.weight/bias` tensors from every weight file in the directory (predictor snapshot or LAION .pth)."""
    found: dict[str, torch.Tensor] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        for key, tensor in _head_tensors(path).items():
            match = _HEAD_KEY.match(key)
            assert match is not None
            found[f"{match.group(1)}.{match.group(2)}"] = tensor.detach().to(torch.float32).clone()
    return found


def build_head(state: dict[str, torch.Tensor], relu: bool, source: Path) -> torch.nn.Sequential:
    """The Linear chain in index order; checks that the shapes chain up and end in one output."""
    indices = sorted({int(k.split(".")[0]) for k in state})
    if not indices:
        raise KoloraError(
            f"no aesthetic head weights (layers.N.weight) in {source}: copy the LAION head file "
            "(e.g. sac+logos+ava1-l14-linearMSE.pth) into it or use the predictor snapshot"
        )
    modules: list[torch.nn.Module] = []
    previous_out = None
    for position, index in enumerate(indices):
        weight = state.get(f"{index}.weight")
        if weight is None or weight.dim() != 2:
            raise KoloraError(f"aesthetic head in {source}: layers.{index} has no 2-D weight")
        out_features, in_features = weight.shape
        if previous_out is not None and in_features != previous_out:
            raise KoloraError(
                f"aesthetic head in {source}: layers.{index} takes {in_features} inputs, the layer before gives {previous_out}"
            )
        linear = torch.nn.Linear(in_features, out_features, bias=f"{index}.bias" in state)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if linear.bias is not None:
                linear.bias.copy_(state[f"{index}.bias"])
        modules.append(linear)
        if relu and position < len(indices) - 1:
            modules.append(torch.nn.ReLU())
        previous_out = out_features
    if previous_out != 1:
        raise KoloraError(f"aesthetic head in {source} ends in {previous_out} outputs, expected 1 score")
    return torch.nn.Sequential(*modules).eval()


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


def load_aesthetic(directory: Path, device: str = "cpu") -> LaionAesthetic:
    from transformers import CLIPVisionModelWithProjection

    _require_dir(directory, "aesthetic model", "evaluate.aesthetic_model")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    relu = any("relu" in str(a).lower() for a in config.get("architectures") or [])
    try:
        with _quiet_transformers():
            vision = CLIPVisionModelWithProjection.from_pretrained(str(directory), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise KoloraError(f"aesthetic model {directory}: no CLIP vision weights could be loaded ({reason})") from None
    head = build_head(head_state(directory), relu, directory)
    if head[0].in_features != vision.config.projection_dim:
        raise KoloraError(
            f"aesthetic head in {directory} takes {head[0].in_features} inputs but the CLIP projects to "
            f"{vision.config.projection_dim}: head and CLIP do not belong together (LAION v2 needs ViT-L/14, 768)"
        )
    processor = _image_processor(directory, vision.config.image_size)
    return LaionAesthetic(vision.to(device).eval(), head.to(device), processor, device, str(directory))


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


def load_clip(directory: Path, device: str = "cpu") -> ClipSimilarity:
    from transformers import AutoModel, AutoProcessor

    _require_dir(directory, "CLIP model", "evaluate.clip_model")
    try:
        model = AutoModel.from_pretrained(str(directory), dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise KoloraError(f"CLIP model {directory} could not be loaded: {' '.join(str(exc).split())}") from None
    if (
        not hasattr(model, "get_image_features")
        or not hasattr(processor, "tokenizer")
        or not hasattr(processor, "image_processor")
    ):
        raise KoloraError(f"{directory} holds a {type(model).__name__}, not a CLIP with image and text towers")
    return ClipSimilarity(model.to(device).eval(), processor, device, str(directory))
