"""Cached encodings are exactly the seed's per-step encodings, and each distinct caption is encoded once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffsynth import SDXLImagePipeline
from diffsynth.data.simple_text_image import TextImageDataset
from diffsynth.models.kolors_text_encoder import ChatGLMModel

from kolora_core.config import TrainConfig
from kolora_core.data.layout import read_trainset
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.training.cache import build_cache
from tests.conftest import write_trainset


@pytest.fixture
def pipe(tiny_models: Path) -> SDXLImagePipeline:
    pipe = SDXLImagePipeline.from_model_manager(load_model_manager(ModelDir(tiny_models), "cpu", torch.float32))
    pipe.device = "cpu"
    return pipe


def _seed_image(trainset: Path, index: int, size: int) -> torch.Tensor:
    """diffsynth's TextImageDataset transform of one image (a one-image dataset always returns it)."""
    one = trainset.parent / f"one-{index}"
    (one / "train").mkdir(parents=True)
    name = read_trainset(trainset)[index][0]
    (one / "train" / name).write_bytes((trainset / "train" / name).read_bytes())
    (one / "train" / "metadata.csv").write_text(f"file_name,text\n{name},x\n", encoding="utf-8")
    return TextImageDataset(str(one), steps_per_epoch=1, height=size, width=size, center_crop=True)[0]["image"]


def test_cached_latents_and_embeddings_equal_fresh_encodings(pipe: SDXLImagePipeline, tmp_path: Path) -> None:
    trainset = write_trainset(tmp_path / "ts", count=3)
    rows = read_trainset(trainset)
    train = TrainConfig(resolution=64, random_flip=True, num_workers=0, precision="32-true")
    cache = build_cache(pipe, trainset, rows, train, torch.device("cpu"), free_encoders=False)
    assert cache.latents.shape == (3, 2, 4, 8, 8) and cache.embeddings.shape[0] == 1
    with torch.no_grad():
        fresh_text = pipe.encode_prompt([rows[0][1]], positive=True)
        for i in range(3):
            image = _seed_image(trainset, i, 64)[None]
            for flip in (0, 1):
                expected = pipe.vae_encoder(torch.flip(image, dims=[3]) if flip else image)
                torch.testing.assert_close(cache.latents[i, flip], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(cache.embeddings[0], fresh_text["encoder_hidden_states"][0], rtol=0, atol=0)
    torch.testing.assert_close(cache.pooled[0], fresh_text["add_text_embeds"][0], rtol=0, atol=0)
    latents, embeddings, pooled, time_ids = cache.batch(
        0, torch.tensor([2, 0]), torch.tensor([True, False]), torch.tensor([0, 0]), None, torch.device("cpu")
    )
    assert torch.equal(latents[0], cache.latents[2, 1]) and torch.equal(latents[1], cache.latents[0, 0])
    assert embeddings.shape[0] == 2 and pooled.shape[0] == 2
    assert time_ids.tolist() == [64, 64, 0, 0, 64, 64] * 2, "the seed's add_time_id without buckets"


def test_each_distinct_caption_is_encoded_once(pipe: SDXLImagePipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainset = write_trainset(tmp_path / "ts", count=6)
    metadata = trainset / "train" / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    captions = ["二次元", "二次元 紫色", "二次元", "二次元 紫色", "二次元", "二次元"]
    metadata.write_text("\n".join([lines[0]] + [f"{i}.png,{c}" for i, c in enumerate(captions)]) + "\n", encoding="utf-8")
    rows = read_trainset(trainset)
    encoded: list[int] = []
    original = ChatGLMModel.forward

    def counting(self: ChatGLMModel, *args: object, **kwargs: object) -> object:
        encoded.append(int(kwargs["input_ids"].shape[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ChatGLMModel, "forward", counting)
    vae_calls: list[int] = []
    pipe.vae_encoder.register_forward_hook(lambda module, args, output: vae_calls.append(args[0].shape[0]))
    cache = build_cache(pipe, trainset, rows, TrainConfig(resolution=64, num_workers=0), torch.device("cpu"))
    assert sum(encoded) == 2 and len(encoded) == 2, "two distinct captions, one ChatGLM pass each"
    assert sum(vae_calls) == 6, "each image through the VAE once"
    assert cache.caption_of_image.tolist() == [0, 1, 0, 1, 0, 0]
    assert pipe.text_encoder_kolors is None and pipe.vae_encoder is None, "encoders are freed after caching"


def test_random_crops_are_cached_per_image_and_reproducible(pipe: SDXLImagePipeline, tmp_path: Path) -> None:
    trainset = write_trainset(tmp_path / "ts", count=2)
    rows = read_trainset(trainset)
    train = TrainConfig(resolution=64, center_crop=False, cached_crops=3, num_workers=0, precision="32-true")
    first = build_cache(pipe, trainset, rows, train, torch.device("cpu"), free_encoders=False)
    again = build_cache(pipe, trainset, rows, train, torch.device("cpu"), free_encoders=False)
    assert first.latents.shape[:2] == (2, 3)
    assert torch.equal(first.latents, again.latents)
    assert not torch.equal(first.latents[0, 0], first.latents[0, 1]), "distinct crops of a 96x112 image at 64 px"
