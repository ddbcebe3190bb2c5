"""Tiny random-weight scorers of the real classes, saved the way the real repos publish them, built offline.

The smoke profile (`models.source: tiny`) and the tests need evaluation models that load through the same code
as the real ones and run on a laptop CPU in a second:

* aesthetic: a `CLIPVisionModelWithProjection` plus a LAION-style head `layers.N.*` in ONE safetensors file,
  with config.json naming `AestheticsPredictorV2Linear` and a preprocessor_config.json: the layout of
  shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE, at 32 px and 16-wide instead of 224 px and 768;
* clip: a `ChineseCLIPModel` with its `ChineseCLIPProcessor` (image processor + BERT WordPiece tokenizer). The
  vocabulary is written here (special tokens, ASCII, every character of the seed story), so the processor
  loads through `AutoProcessor` with no download and the story's prompts tokenise without [UNK].

Their scores are deterministic random numbers: they prove load -> score -> gate -> publish, never quality.
"""

from __future__ import annotations

import itertools
import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file

from kolora_core.config.seed import SEED_STORY

TINY_SCORERS_ARCHITECTURE = "tiny-scorers-v1"
IMAGE_SIZE = 32
HEAD_SIZES = (16, 12, 8, 6, 4, 1)  # projection_dim -> ... -> 1, like LAION's 768 -> 1024 -> 128 -> 64 -> 16 -> 1
# where AestheticsPredictorV2Linear / V2ReLU keep their Linear layers in `layers` (Dropout/ReLU in between)
LINEAR_HEAD_INDICES = (0, 2, 4, 6, 7)
RELU_HEAD_INDICES = (0, 3, 6, 9, 11)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def vision_config() -> dict[str, int]:
    """A ViT of 2 layers on 32 px images in 8 px patches (CLIP ViT-L/14: 24 layers, 224 px, 14 px patches)."""
    return {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }


def tiny_head(seed: int, relu: bool = False) -> dict[str, torch.Tensor]:
    """`layers.N.weight/bias` numbered as the Linear (or ReLU) predictor numbers them, torch.nn.Linear's own init."""
    torch.manual_seed(seed)
    indices = RELU_HEAD_INDICES if relu else LINEAR_HEAD_INDICES
    state = {}
    for index, (n_in, n_out) in zip(indices, itertools.pairwise(HEAD_SIZES), strict=True):
        linear = torch.nn.Linear(n_in, n_out)
        state[f"layers.{index}.weight"] = linear.weight.detach().clone()
        state[f"layers.{index}.bias"] = linear.bias.detach().clone()
    return state


def write_tiny_aesthetic(out: Path, seed: int) -> Path:
    """The predictor snapshot layout: config.json (architectures AestheticsPredictorV2Linear), model.safetensors
    holding `vision_model.*`, `visual_projection.*` and `layers.*`, preprocessor_config.json."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config(), projection_dim=HEAD_SIZES[0]))
    vision.save_pretrained(out)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=size).save_pretrained(out)
    state = {k: v.contiguous() for k, v in vision.state_dict().items()} | tiny_head(seed + 1)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["architectures"] = ["AestheticsPredictorV2Linear"]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary BERT's tokenizer can use for the story: it splits CJK text into single characters."""
    story = "".join(prompt + negative for prompt, negative, _ in SEED_STORY)
    chars = sorted((set(story) | set(string.ascii_lowercase + string.digits + string.punctuation)) - set(string.whitespace))
    return [*SPECIAL_TOKENS, *chars]


def write_tiny_chinese_clip(out: Path, seed: int) -> Path:
    """OFA-Sys/chinese-clip-vit-base-patch16's layout: config.json, model.safetensors, preprocessor_config.json,
    vocab.txt, tokenizer_config.json, special_tokens_map.json."""
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel, ChineseCLIPProcessor

    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = ChineseCLIPProcessor(
        image_processor=ChineseCLIPImageProcessor(size=size, crop_size=size),
        tokenizer=BertTokenizer(str(out / "vocab.txt"), model_max_length=52),
    )
    processor.save_pretrained(out)
    torch.manual_seed(seed)
    config = ChineseCLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        },
        vision_config=vision_config(),
        projection_dim=16,
    )
    ChineseCLIPModel(config).save_pretrained(out)
    return out
