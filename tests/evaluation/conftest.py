"""Tiny random evaluation models, from the library's own builders (kolora_core.models.random_scorers), plus the
published variants the loader also reads: a CLIP directory with LAION's .pth head file, the ReLU predictor, and the
other CLIP families' layouts (OpenAI's CLIP, BAAI's AltCLIP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from kolora_core.config import load_config
from kolora_core.models.fetch import SCORER_FILES, fetch_scorers
from kolora_core.models.random_scorers import SPECIAL_TOKENS, story_vocab, tiny_head, write_random_aesthetic
from kolora_core.models.scorers import AESTHETIC, CLIP
from tests.conftest import mark_complete

SEED = 0


def head_weights(relu: bool = False) -> dict[str, torch.Tensor]:
    """The head `write_aesthetic_dir` stores (the library's tiny head, seed + 1 as write_random_aesthetic uses)."""
    return tiny_head(SEED + 1, relu=relu)


def write_aesthetic_dir(out: Path, layout: str = "snapshot", relu: bool = False) -> Path:
    """snapshot: one file with CLIP vision + head (the HF predictor repo); laion: CLIP dir + LAION's .pth head."""
    write_random_aesthetic(out, SEED)
    weights = out / "model.safetensors"
    vision = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("layers.")}
    if layout == "laion":
        save_file(vision, str(weights), metadata={"format": "pt"})
        torch.save(head_weights(relu), out / "sac+logos+ava1-l14-linearMSE.pth")
    elif relu:
        save_file(vision | head_weights(relu=True), str(weights), metadata={"format": "pt"})
        config = json.loads((out / "config.json").read_text())
        config["architectures"] = ["AestheticsPredictorV2ReLU"]
        (out / "config.json").write_text(json.dumps(config))
    return out


_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}


def _write_clip(out: Path, model_class: Any, processor_class: Any, tokenizer: Any, text_config: dict[str, Any]) -> Path:
    """A tiny random `model_class` for 32 px images and its processor, as fetch-models downloads them (only
    SCORER_FILES: a tokenizer as tokenizer.json, without vocab.json, merges.txt or a sentencepiece model)."""
    from transformers import CLIPImageProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor_class(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    for path in out.iterdir():
        if path.name not in SCORER_FILES[CLIP]:
            path.unlink()
    torch.manual_seed(SEED)
    config = model_class.config_class(
        text_config=_TOWER | text_config, vision_config=_TOWER | {"image_size": 32, "patch_size": 8}, projection_dim=16
    )
    model_class(config).save_pretrained(out)
    return out


def write_openai_clip_dir(out: Path) -> Path:
    """openai/clip-vit-base-patch32's layout at tiny size (model_type clip). The byte-level BPE vocabulary is CLIP's
    first 512 entries (every byte, alone and word-final) and no merges, so any text tokenises without a download."""
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    out.mkdir(parents=True)
    chars = list(bytes_to_unicode().values())
    vocab = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizerFast(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=64)
    return _write_clip(out, CLIPModel, CLIPProcessor, tokenizer, {"max_position_embeddings": 64, "vocab_size": len(vocab)})


def write_altclip_dir(out: Path) -> Path:
    """BAAI/AltCLIP's layout at tiny size (model_type altclip): an XLM-R tokenizer (a unigram tokenizer.json over the
    story's characters, as `story_vocab` writes them for Chinese-CLIP) and AltCLIP's RoBERTa text tower."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import AltCLIPModel, AltCLIPProcessor, XLMRobertaTokenizerFast

    out.mkdir(parents=True)
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", *(c for c in story_vocab() if c not in SPECIAL_TOKENS), "<mask>"]
    tokenizer = Tokenizer(models.Unigram([(piece, -1.0) for piece in pieces], unk_id=3))
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = XLMRobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=64)
    text = {"max_position_embeddings": 66, "vocab_size": len(pieces), "project_dim": 16, "pad_token_id": 1}
    return _write_clip(out, AltCLIPModel, AltCLIPProcessor, fast, text)


def shard_weights(folder: Path) -> Path:
    """Re-save `folder`'s model.safetensors as transformers saves a large model: shards of at most 20 KB and
    model.safetensors.index.json naming the file of each tensor (huggingface_hub's split, transformers' own)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    state = load_file(str(folder / "model.safetensors"))
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors", max_shard_size="20KB")
    assert len(split.filename_to_tensors) > 1
    (folder / "model.safetensors").unlink()
    for file, names in split.filename_to_tensors.items():
        save_file({name: state[name] for name in names}, str(folder / file), metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename}), encoding="utf-8")
    return index


@pytest.fixture(scope="session")
def scorers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What fetch-models writes for the smoke profile: the tiny scorers artifact, committed."""
    out = tmp_path_factory.mktemp("scorers")
    config = load_config("smoke")
    fetch_scorers(config.evaluate, config.models, out)
    return mark_complete(out)


@pytest.fixture(scope="session")
def aesthetic_dir(scorers_dir: Path) -> Path:
    return scorers_dir / AESTHETIC


@pytest.fixture(scope="session")
def chinese_clip_dir(scorers_dir: Path) -> Path:
    return scorers_dir / CLIP


@pytest.fixture(scope="session")
def openai_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_openai_clip_dir(tmp_path_factory.mktemp("openai") / "clip")


@pytest.fixture(scope="session")
def altclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_altclip_dir(tmp_path_factory.mktemp("altclip") / "clip")
