"""`models.source: random` writes full-size random scorers of the real classes, so evaluate needs no hub either."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import ChineseCLIPConfig, ChineseCLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from kolora_core.config import load_config
from kolora_core.evaluation.scoring import load_scorers
from kolora_core.models import fetch
from kolora_core.models.fetch import fetch_scorers
from kolora_core.models.random_scorers import FULL, TINY, story_vocab, tiny_head
from kolora_core.models.scorers import LAION_V2_INPUT, scorer_identity


def test_full_sizes_are_the_real_architectures() -> None:
    """CLIP ViT-L/14 + projection (openai/clip-vit-large-patch14's vision side) and chinese-clip-vit-base-patch16."""
    with torch.device("meta"):
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**FULL.aesthetic_vision))
        clip = ChineseCLIPModel(
            ChineseCLIPConfig(
                text_config=FULL.clip_text | {"vocab_size": FULL.vocab_size},
                vision_config=FULL.clip_vision,
                projection_dim=FULL.clip_projection,
            )
        )
    assert sum(p.numel() for p in vision.parameters()) == 303_966_208
    assert sum(p.numel() for p in clip.parameters()) == 188_262_913
    head = tiny_head(0, sizes=FULL)
    assert [tuple(head[f"layers.{i}.weight"].shape) for i in (0, 2, 4, 6, 7)] == [
        (1024, LAION_V2_INPUT),
        (128, 1024),
        (64, 128),
        (16, 64),
        (1, 16),
    ]
    vocab = story_vocab(FULL.vocab_size)
    assert len(vocab) == 21128 and len(set(vocab)) == len(vocab)
    assert all(ch in vocab for ch in "二次元紫色")


def test_random_source_writes_random_scorers_that_evaluate_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full sizes swapped for the tiny ones (same code) to stay small: kind, sources and the report's note."""
    monkeypatch.setattr(fetch, "FULL", TINY)
    config = load_config("full", overrides={"models.source": "random", "models.random_seed": 3})
    scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "s")
    manifest = scorers.read_manifest()
    assert manifest["kind"] == "random" and manifest["sources"]["seed"] == 3
    assert manifest["sources"]["aesthetic"]["stands_in_for"] == config.evaluate.aesthetic_repo
    assert scorers.source("clip") == f"full-size random stand-in for {config.evaluate.clip_repo}"
    loaded = load_scorers(scorers.root, config.evaluate, "cpu")
    assert loaded.facts["kind"] == "random" and "RANDOM-WEIGHT" in loaded.facts["note"]
    assert loaded.aesthetic is not None and loaded.clip is not None
    again = fetch_scorers(config.evaluate, config.models, tmp_path / "again")
    assert scorer_identity(again.root) == scorer_identity(scorers.root)
