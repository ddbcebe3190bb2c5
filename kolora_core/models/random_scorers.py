"""Random-weight scorers of the real classes, saved the way the real repos publish them, built offline.

Two sizes (`ScorerSizes`), one code path:

* `TINY` for the smoke profile (`models.source: tiny`) and the tests: loads through the same code as the real
  scorers and scores on a laptop CPU in a second;
* `FULL` for `models.source: random` (offline runs and benchmarks on a GPU machine): the real architectures,
  CLIP ViT-L/14 (24 layers, 224 px, 14 px patches, projection 768) and LAION's 768-1024-128-64-16-1 head,
  Chinese-CLIP ViT-B/16 with its RoBERTa-wwm-ext-base text tower (12 + 12 layers, 21,128-word vocabulary,
  projection 512), so evaluate costs what it costs with the real weights.

Files:
* aesthetic: a `CLIPVisionModelWithProjection` plus a LAION-style head `layers.N.*` in ONE safetensors file,
  with config.json naming `AestheticsPredictorV2Linear` and a preprocessor_config.json: the layout of
  shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE;
* clip: a `ChineseCLIPModel` with its `ChineseCLIPProcessor` (image processor + BERT WordPiece tokenizer), the
  layout of OFA-Sys/chinese-clip-vit-base-patch16. The vocabulary is written here (special tokens, ASCII,
  every character of the seed story; at full size padded with `[unusedN]` to the real 21,128 rows), so the
  processor loads with no download and the story's prompts tokenise without [UNK];
  token ids differ from the real vocabulary's, which random weights make meaningless anyway.

Their scores are deterministic random numbers: they prove load -> score -> gate -> publish, never quality.
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kolora_core.config.seed import SEED_STORY

# where AestheticsPredictorV2Linear / V2ReLU keep their Linear layers in `layers` (Dropout/ReLU in between)
LINEAR_HEAD_INDICES = (0, 2, 4, 6, 7)
RELU_HEAD_INDICES = (0, 3, 6, 9, 11)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class ScorerSizes:
    """The architectures' sizes: the aesthetic ViT and head, Chinese-CLIP's two towers."""

    architecture: str  # recorded in the scorers manifest
    aesthetic_vision: dict[str, Any]
    head: tuple[int, ...]  # projection_dim -> ... -> 1
    clip_text: dict[str, Any]
    clip_vision: dict[str, Any]
    clip_projection: int
    vocab_size: int | None  # None: just the story's characters
    text_length: int = 52  # Chinese-CLIP's context length

    @property
    def image_size(self) -> int:
        return int(self.aesthetic_vision["image_size"])


def _vit(hidden: int, intermediate: int, layers: int, heads: int, image: int, patch: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image,
        "patch_size": patch,
    }


TINY = ScorerSizes(
    architecture="tiny-scorers-v1",
    aesthetic_vision=_vit(32, 37, 2, 4, 32, 8) | {"projection_dim": 16},
    head=(16, 12, 8, 6, 4, 1),  # like LAION's 768 -> 1024 -> 128 -> 64 -> 16 -> 1
    clip_text={
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    },
    clip_vision=_vit(32, 37, 2, 4, 32, 8),
    clip_projection=16,
    vocab_size=None,
)
FULL = ScorerSizes(
    architecture="random-scorers-full-v1",
    aesthetic_vision=_vit(1024, 4096, 24, 16, 224, 14) | {"projection_dim": 768},  # openai/clip-vit-large-patch14
    head=(768, 1024, 128, 64, 16, 1),
    clip_text={  # hfl/chinese-roberta-wwm-ext
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
    },
    clip_vision=_vit(768, 3072, 12, 12, 224, 16),
    clip_projection=512,
    vocab_size=21128,
)


def tiny_head(seed: int, relu: bool = False, sizes: ScorerSizes = TINY) -> dict[str, torch.Tensor]:
    """`layers.N.weight/bias` numbered as the Linear (or ReLU) predictor numbers them, torch.nn.Linear's own init."""
    torch.manual_seed(seed)
    indices = RELU_HEAD_INDICES if relu else LINEAR_HEAD_INDICES
    state = {}
    for index, (n_in, n_out) in zip(indices, itertools.pairwise(sizes.head), strict=True):
        linear = torch.nn.Linear(n_in, n_out)
        state[f"layers.{index}.weight"] = linear.weight.detach().clone()
        state[f"layers.{index}.bias"] = linear.bias.detach().clone()
    return state


def write_random_aesthetic(out: Path, seed: int, sizes: ScorerSizes = TINY) -> Path:
    """The predictor snapshot layout: config.json (architectures AestheticsPredictorV2Linear), model.safetensors
    holding `vision_model.*`, `visual_projection.*` and `layers.*`, preprocessor_config.json."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**sizes.aesthetic_vision))
    vision.save_pretrained(out)
    size = {"height": sizes.image_size, "width": sizes.image_size}
    CLIPImageProcessor(size={"shortest_edge": sizes.image_size}, crop_size=size).save_pretrained(out)
    state = {k: v.contiguous() for k, v in vision.state_dict().items()} | tiny_head(seed + 1, sizes=sizes)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["architectures"] = ["AestheticsPredictorV2Linear"]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def story_vocab(size: int | None = None) -> list[str]:
    """A WordPiece vocabulary BERT's tokenizer can use for the story (it splits CJK text into single characters),
    padded with `[unusedN]` entries to `size` rows."""
    story = "".join(prompt + negative for prompt, negative, _ in SEED_STORY)
    chars = sorted((set(story) | set(string.ascii_lowercase + string.digits + string.punctuation)) - set(string.whitespace))
    vocab = [*SPECIAL_TOKENS, *chars]
    return vocab + [f"[unused{i}]" for i in range((size or len(vocab)) - len(vocab))]


def write_random_chinese_clip(out: Path, seed: int, sizes: ScorerSizes = TINY) -> Path:
    """OFA-Sys/chinese-clip-vit-base-patch16's layout: config.json, model.safetensors, preprocessor_config.json,
    vocab.txt, tokenizer_config.json, special_tokens_map.json."""
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel, ChineseCLIPProcessor

    out.mkdir(parents=True, exist_ok=True)
    vocab = story_vocab(sizes.vocab_size)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    size = {"height": sizes.clip_vision["image_size"], "width": sizes.clip_vision["image_size"]}
    processor = ChineseCLIPProcessor(
        image_processor=ChineseCLIPImageProcessor(size=size, crop_size=size),
        tokenizer=BertTokenizer(str(out / "vocab.txt"), model_max_length=sizes.text_length),
    )
    processor.save_pretrained(out)
    torch.manual_seed(seed)
    config = ChineseCLIPConfig(
        text_config=sizes.clip_text | {"vocab_size": len(vocab)},
        vision_config=sizes.clip_vision,
        projection_dim=sizes.clip_projection,
    )
    ChineseCLIPModel(config).save_pretrained(out)
    return out
