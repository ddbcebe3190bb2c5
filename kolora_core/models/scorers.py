"""The scorers directory: the evaluation models as one artifact, with the base models' manifest.

    scorers/
      kolora_models.json   kind (hub | tiny | random), sources {aesthetic, clip: {repo, revision} | null}, files {size, sha256}
      aesthetic/           LAION aesthetics predictor v2 as shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE
                           publishes it: config.json, one weight file holding the CLIP ViT-L/14 vision tower, its
                           projection and the head `layers.N.*`, preprocessor_config.json
      clip/                a CLIP that reads Chinese (OFA-Sys/chinese-clip-vit-base-patch16: config.json, weights,
                           preprocessor_config.json, vocab.txt and the tokenizer configs)

fetch-models writes it (`kolora_core.models.fetch.fetch_scorers`), evaluate loads it
(`kolora_core.evaluation.scoring`). A part the config sets to null is absent. The fingerprint over the file
hashes is the *scorer identity*: two reports with the same identity were scored by the same bytes, so their
numbers compare one for one (the champion rule uses it).

This module also owns the LAION head's format (which tensors are the head, and that their shapes chain from the
CLIP's projection to one score), the CLIP families kolora loads (config.json's model_type -> transformers classes)
and the checks of each part's folder (`check_aesthetic`, `check_clip`), so a head that does not fit its CLIP, a
CLIP of another family or a processor file transformers would misread fails in fetch-models, right after the
download and before any GPU time, and evaluate runs the same checks on what the artifact store hands back.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kolora_core.config import EvaluateConfig
from kolora_core.errors import KoloraError
from kolora_core.models.hub import HubRepo
from kolora_core.models.layout import ManifestDir
from kolora_core.models.shard_index import REDO, check_processor_files, check_shard_indexes, json_object

AESTHETIC, CLIP = "aesthetic", "clip"
PARTS = (AESTHETIC, CLIP)
FIELDS = {AESTHETIC: "evaluate.aesthetic_repo", CLIP: "evaluate.clip_repo"}  # the config field naming each part
HUB_KIND, TINY_KIND, RANDOM_KIND = "hub", "tiny", "random"
STAND_IN_KINDS = {TINY_KIND: "tiny random", RANDOM_KIND: "full-size random"}  # scorers written instead of downloaded
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
LAION_V2_INPUT = 768  # CLIP ViT-L/14's projection width: what every LAION aesthetics v2 head reads
# config.json model_types the CLIP scorer loads; `clip_families` gives each its classes
CLIP_FAMILIES = ("chinese_clip", "clip", "altclip")
_HEAD_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class ScorersDir(ManifestDir):
    """The scorers artifact; `part(AESTHETIC)` / `part(CLIP)` are model directories, present only when configured."""

    def part(self, name: str) -> Path:
        return self.root / name

    def present(self) -> list[str]:
        return [name for name in PARTS if self.part(name).is_dir()]

    def weight_files(self) -> list[Path]:
        return sorted(p for name in self.present() for p in self.part(name).rglob("*") if p.is_file())

    def required_files(self) -> list[Path]:
        return [self.part(name) / "config.json" for name in self.present()]

    def source(self, name: str) -> str:
        """How messages and the report name one part: its hub repo and revision, or the tiny stand-in."""
        entry = self.read_manifest()["sources"].get(name) or {}
        if entry.get("repo") in STAND_IN_KINDS:
            return f"{STAND_IN_KINDS[entry['repo']]} stand-in for {entry.get('stands_in_for')}"
        return f"{entry.get('repo')}@{entry.get('revision') or 'default'}"

    def fix(self, name: str) -> str:
        """What a refusal of a file in part `name` tells the user to do.

        Why not always "rerun fetch-models": a hub part's files are the repo's own (fetch-models checks them right
        after the download, evaluate after their sha256 matched), so a rerun downloads the same file; the stand-ins
        are written by kolora, and a rerun writes them anew.
        """
        if self.read_manifest()["kind"] != HUB_KIND:
            return REDO
        return f"the file is as {self.source(name)} publishes it: point {FIELDS[name]} at another repo or revision"


def scorer_repos(evaluate: EvaluateConfig) -> dict[str, HubRepo]:
    """The scorers the config names, by part (a part set to null is left out)."""
    named = {
        AESTHETIC: (evaluate.aesthetic_repo, evaluate.aesthetic_revision),
        CLIP: (evaluate.clip_repo, evaluate.clip_revision),
    }
    return {part: HubRepo.parse(ref, revision, FIELDS[part]) for part, (ref, revision) in named.items() if ref is not None}


def scorer_identity(root: Path) -> str:
    """The scorer identity of a scorers directory: sha256 over its manifest's file hashes (which bytes, not where from)."""
    return ScorersDir(root).fingerprint()


@dataclass(frozen=True)
class HeadLayer:
    """One Linear of a LAION head, as stored: `layers.<index>.weight` (out x in) and its bias."""

    index: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    file: str  # the weight file it was read from, for messages


def _head_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The `layers.N.*` tensors of one weight file, without reading the rest (a full CLIP file is 1.2 GB)."""
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


def read_head(directory: Path, source: str) -> list[HeadLayer]:
    """The head's Linear layers in index order, from every weight file in `directory` (predictor snapshot or LAION .pth).

    Checks what the stored numbers can prove: 2-D weights whose sizes chain up and end in one score. Errors name
    `source` (the hub repo) and the weight file.
    """
    found: dict[str, torch.Tensor] = {}
    files: dict[int, str] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        for key, tensor in _head_tensors(path).items():
            match = _HEAD_KEY.match(key)
            assert match is not None
            found[f"{match.group(1)}.{match.group(2)}"] = tensor.detach().to(torch.float32).clone()
            files[int(match.group(1))] = path.name
    indices = sorted({int(k.split(".")[0]) for k in found})
    if not indices:
        raise KoloraError(
            f"no aesthetic head weights (layers.N.weight) in {source} ({directory}): use the LAION aesthetics predictor "
            "v2 snapshot, or copy LAION's head file (e.g. sac+logos+ava1-l14-linearMSE.pth) into a CLIP ViT-L/14 directory"
        )
    layers: list[HeadLayer] = []
    for index in indices:
        weight = found.get(f"{index}.weight")
        where = f"aesthetic head of {source} ({files[index]})"
        if weight is None or weight.dim() != 2:
            raise KoloraError(f"{where}: layers.{index} has no 2-D weight")
        if layers and weight.shape[1] != layers[-1].weight.shape[0]:
            raise KoloraError(
                f"{where}: layers.{index} takes {weight.shape[1]} inputs, the layer before gives {layers[-1].weight.shape[0]}"
            )
        layers.append(HeadLayer(index, weight, found.get(f"{index}.bias"), files[index]))
    last = layers[-1]
    if last.weight.shape[0] != 1:
        raise KoloraError(f"aesthetic head of {source} ({last.file}) ends in {last.weight.shape[0]} outputs, expected 1 score")
    return layers


def check_aesthetic(directory: Path, source: str, fix: str = REDO) -> tuple[Any, list[HeadLayer]]:
    """The CLIP vision config and the head of an aesthetic model directory, after checking that they belong together
    and that its shard indexes and processor files are what `load_aesthetic` may hand to transformers (refusals end
    in `fix`, `ScorersDir.fix`)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    path = directory / "config.json"
    if not path.is_file():
        raise KoloraError(f"aesthetic model {source} ({directory}) has no config.json: {fix}")
    if json_object(path) is None:  # CLIPVisionConfig fails on `[]` with a TypeError traceback
        raise KoloraError(f"aesthetic model {source}: {path} is not a JSON object: {fix}")
    vision = CLIPVisionConfig.from_pretrained(str(directory))
    layers = read_head(directory, source)
    width = layers[0].weight.shape[1]
    if width != vision.projection_dim:
        vit_l14 = vision.patch_size == 14 and vision.hidden_size == 1024
        expected = f"a LAION v2 head on CLIP ViT-L/14 takes {LAION_V2_INPUT}" if vit_l14 else "they must be equal"
        raise KoloraError(
            f"aesthetic head of {source} (layers.{layers[0].index} in {layers[0].file}) takes {width} inputs but "
            f"the CLIP in config.json projects to {vision.projection_dim} ({expected}): head and CLIP do not belong together"
        )
    check_shard_indexes(directory, fix)
    check_processor_files(directory, CLIPImageProcessor, fix)  # the class `load_aesthetic` builds
    return vision, layers


@dataclass(frozen=True)
class ClipFamily:
    """The transformers classes one CLIP family loads with (`from_pretrained` of each, the processor assembled)."""

    model: type[Any]
    processor: type[Any]
    image_processor: type[Any]
    tokenizer: type[Any]


@functools.cache
def clip_families() -> dict[str, ClipFamily]:
    """By config.json's model_type, keyed by `CLIP_FAMILIES`. Here, not in evaluate, so that fetch-models checks a
    download's processor files against the image processor class evaluate will build from them.

    The processors' own `from_pretrained` is not used: CLIPProcessor loads its tokenizer through AutoTokenizer (the
    folder's `tokenizer_class` or model_type picks it), and every processor loads an audio tokenizer that
    processor_config.json names (`ProcessorMixin.get_processor_dict`). The slow image processors and fast tokenizers
    are what `AutoProcessor` gave for these folders.
    """
    from transformers import (
        AltCLIPModel,
        AltCLIPProcessor,
        BertTokenizerFast,
        ChineseCLIPImageProcessor,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizerFast,
        XLMRobertaTokenizerFast,
    )

    classes = {
        "chinese_clip": ClipFamily(ChineseCLIPModel, ChineseCLIPProcessor, ChineseCLIPImageProcessor, BertTokenizerFast),
        "clip": ClipFamily(CLIPModel, CLIPProcessor, CLIPImageProcessor, CLIPTokenizerFast),
        "altclip": ClipFamily(AltCLIPModel, AltCLIPProcessor, CLIPImageProcessor, XLMRobertaTokenizerFast),
    }
    return {model_type: classes[model_type] for model_type in CLIP_FAMILIES}


def _clip_model_type(directory: Path, source: str, fix: str) -> str:
    """config.json's model_type, one of `CLIP_FAMILIES`, else one line naming the repo, the file, the type and the
    config field to change (a repo of another family, a SigLIP say, fails in fetch-models, not in evaluate after
    train and generate spent GPU time)."""
    path = directory / "config.json"
    if not path.is_file():
        raise KoloraError(f"CLIP model {source} ({directory}) has no config.json: {fix}")
    config = json_object(path)
    if config is None:
        raise KoloraError(f"{path} is not a JSON object: {fix}")
    model_type = config.get("model_type")
    if not (isinstance(model_type, str) and model_type in CLIP_FAMILIES):
        raise KoloraError(
            f"CLIP model {source}: {path} has model_type {model_type!r}, not a CLIP family kolora loads "
            f"({', '.join(CLIP_FAMILIES)}): point {FIELDS[CLIP]} at a model of one of them and rerun fetch-models"
        )
    return model_type


def check_clip(directory: Path, source: str, fix: str = REDO) -> ClipFamily:
    """The CLIP family of a CLIP model directory (config.json's model_type), after checking that its shard indexes and
    processor files are what `load_clip` may hand to transformers with the family's image processor (refusals end in
    `fix`, `ScorersDir.fix`)."""
    family = clip_families()[_clip_model_type(directory, source, fix)]
    check_shard_indexes(directory, fix)
    check_processor_files(directory, family.image_processor, fix)
    return family
