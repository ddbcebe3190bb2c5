"""Tiny random evaluation models, from the library's own builders (kolora_core.models.random_scorers), plus the
published variants the loader also reads: a CLIP directory with LAION's .pth head file, and the ReLU predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kolora_core.config import load_config
from kolora_core.models.fetch import fetch_scorers
from kolora_core.models.random_scorers import tiny_head, write_random_aesthetic
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
