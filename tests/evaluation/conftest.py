"""Tiny random evaluation models saved the way the real ones are published, built offline."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

# A Chinese-reading vocabulary for BertTokenizer (BERT splits CJK text into single characters).
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ",",
    "、",
    *"二次元一个紫色短发小女孩在家中沙发上坐着长少黑礼服唱歌丑陋变形",
]
HEAD_SIZES = [16, 12, 8, 6, 4, 1]  # projection_dim -> ... -> 1, like LAION's 768 -> 1024 -> 128 -> 64 -> 16 -> 1


def _vision_config() -> dict[str, int]:
    return {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    }


def head_weights(seed: int = 0, relu: bool = False) -> dict[str, torch.Tensor]:
    """`layers.N.*` as AestheticsPredictorV2Linear numbers them (Linear at 0,2,4,6,7; ReLU variant 0,3,6,9,11)."""
    generator = torch.Generator().manual_seed(seed)
    indices = [0, 3, 6, 9, 11] if relu else [0, 2, 4, 6, 7]
    state = {}
    for index, (n_in, n_out) in zip(indices, itertools.pairwise(HEAD_SIZES), strict=True):
        state[f"layers.{index}.weight"] = torch.randn(n_out, n_in, generator=generator)
        state[f"layers.{index}.bias"] = torch.randn(n_out, generator=generator)
    return state


def write_aesthetic_dir(out: Path, layout: str = "snapshot", relu: bool = False) -> Path:
    """snapshot: one file with CLIP vision + head (the HF predictor repo); laion: CLIP dir + LAION's .pth head."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(1)
    config = CLIPVisionConfig(**_vision_config(), projection_dim=HEAD_SIZES[0])
    vision = CLIPVisionModelWithProjection(config)
    vision.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    head = head_weights(relu=relu)
    if layout == "snapshot":
        state = {k: v.contiguous() for k, v in vision.state_dict().items()} | head
        save_file(state, str(out / "model.safetensors"))
        meta = json.loads((out / "config.json").read_text())
        meta["architectures"] = ["AestheticsPredictorV2ReLU" if relu else "AestheticsPredictorV2Linear"]
        (out / "config.json").write_text(json.dumps(meta))
    else:
        torch.save(head, out / "sac+logos+ava1-l14-linearMSE.pth")
    return out


def write_chinese_clip_dir(out: Path) -> Path:
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel, ChineseCLIPProcessor

    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab), model_max_length=52)
    processor = ChineseCLIPProcessor(
        image_processor=ChineseCLIPImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(out)
    torch.manual_seed(2)
    config = ChineseCLIPConfig(
        text_config={
            "vocab_size": len(VOCAB),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
        },
        vision_config=_vision_config(),
        projection_dim=16,
    )
    ChineseCLIPModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def aesthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aesthetic_dir(tmp_path_factory.mktemp("aesthetic"))


@pytest.fixture(scope="session")
def chinese_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chinese_clip_dir(tmp_path_factory.mktemp("cnclip"))
