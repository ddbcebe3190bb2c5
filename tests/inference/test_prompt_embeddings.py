"""train's `prompt-embeddings`: generate renders the same images from them as from ChatGLM, without loading it.

Train (tiny models, CPU) embeds the story with the ChatGLM it loaded for its captions; generate with that
directory must give the images it gives without it, never read the text encoder when every text is there, and
fall back to it for texts that are missing (prompts changed), made from other weights or in another dtype.
The directory comes through the artifact store: damaged ones fail with the file's name (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffsynth.models.kolors_text_encoder import ChatGLMModel
from PIL import Image
from safetensors.torch import load_file, save_file

from jobs.generate import main as generate_main
from kolora_core.config import load_config
from kolora_core.models.layout import ModelDir
from kolora_core.models.prompt_embeddings import (
    MANIFEST_FILE,
    TENSOR_FILE,
    read_prompt_embeddings,
    story_texts,
    write_prompt_embeddings,
)
from kolora_core.stages import COMPLETE_MARKER
from tests.conftest import mark_complete
from tests.training.helpers import train


@pytest.fixture(scope="module")
def trained(tiny_models: Path, tiny_trainset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trained")
    lora, embeddings = root / "lora", root / "prompt-embeddings"
    assert train(tiny_models, tiny_trainset, lora, "--train.steps", "2", "--prompt-embeddings", str(embeddings)) == 0
    return lora, embeddings


def _generate(models: Path, lora: Path, out: Path, embeddings: Path | None, *extra: str) -> int:
    argv = ["--profile", "smoke", "--models", str(models), "--lora", str(lora), "--images", str(out), *extra]
    return generate_main(argv + (["--prompt-embeddings", str(embeddings)] if embeddings else []))


def _pixels(directory: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(directory.glob("*.png"))}


def test_train_writes_every_story_text(trained: tuple[Path, Path], tiny_models: Path) -> None:
    _, embeddings = trained
    manifest = json.loads((embeddings / MANIFEST_FILE).read_text(encoding="utf-8"))
    smoke = load_config("smoke")
    assert [t["text"] for t in manifest["texts"]] == story_texts(smoke.generate)
    assert manifest["text_encoder_sha256"] == ModelDir(tiny_models).text_encoder_fingerprint()
    assert manifest["dtype"] == "float32" and manifest["skipped"] is None  # 32-true on CPU: generate's dtype there
    assert (embeddings / COMPLETE_MARKER).is_file()
    summary = json.loads((trained[0] / "train_summary.json").read_text(encoding="utf-8"))
    assert {"load_models", "prompt_embeddings", "cache"} <= set(summary["timings"])


def test_generate_from_embeddings_gives_chatglms_images_without_loading_it(
    trained: tuple[Path, Path], tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora, embeddings = trained
    assert _generate(tiny_models, lora, tmp_path / "chatglm", None) == 0
    with monkeypatch.context() as patch:
        patch.setattr(ChatGLMModel, "from_pretrained", lambda *a, **k: pytest.fail("the text encoder was loaded"))
        assert _generate(tiny_models, lora, tmp_path / "cached", embeddings) == 0
    ours, reference = _pixels(tmp_path / "cached"), _pixels(tmp_path / "chatglm")
    assert len(reference) == 8 and ours.keys() == reference.keys()
    assert all(np.array_equal(ours[name], reference[name]) for name in reference)


def test_changed_prompts_load_the_text_encoder_for_the_new_texts(
    trained: tuple[Path, Path], tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lora, embeddings = trained
    story = load_config("smoke").generate.prompts[0]
    prompts = json.dumps([{"prompt": story.prompt, "negative_prompt": "全新的反向提示", "seed": story.seed}], ensure_ascii=False)
    with caplog.at_level("INFO"):
        assert _generate(tiny_models, lora, tmp_path / "new", embeddings, "--generate.prompts", prompts) == 0
    assert "1 of 2 texts from prompt-embeddings (the prompts changed since training): loading the text encoder" in caplog.text
    assert _generate(tiny_models, lora, tmp_path / "plain", None, "--generate.prompts", prompts) == 0
    assert np.array_equal(_pixels(tmp_path / "new")["000.png"], _pixels(tmp_path / "plain")["000.png"])


def test_embeddings_of_other_weights_or_dtype_are_not_used(trained: tuple[Path, Path], tiny_models: Path) -> None:
    _, embeddings = trained
    fingerprint, width = ModelDir(tiny_models).text_encoder_fingerprint(), ModelDir(tiny_models).text_encoder_width()
    texts = story_texts(load_config("smoke").generate)
    assert list(read_prompt_embeddings(embeddings, fingerprint, torch.float32, width).embeddings) == texts
    other = read_prompt_embeddings(embeddings, "0" * 64, torch.float32, width)
    assert other.embeddings == {} and other.refused and other.refused.startswith("made with another text_encoder_sha256")
    fp16 = read_prompt_embeddings(embeddings, fingerprint, torch.float16, width)
    assert fp16.embeddings == {} and fp16.refused == "made with another dtype (float32)"
    assert read_prompt_embeddings(None, fingerprint, torch.float32, width).refused == "no prompt-embeddings input"


def test_skipped_embeddings_make_generate_encode(tiny_models: Path, tmp_path: Path, trained: tuple[Path, Path]) -> None:
    fingerprint = ModelDir(tiny_models).text_encoder_fingerprint()
    write_prompt_embeddings(tmp_path / "e", {}, fingerprint, skipped="the text encoder ran in bfloat16")
    mark_complete(tmp_path / "e")
    lookup = read_prompt_embeddings(tmp_path / "e", fingerprint, torch.float32, ModelDir(tiny_models).text_encoder_width())
    assert lookup.embeddings == {} and lookup.refused == "train wrote none (the text encoder ran in bfloat16)"
    shard = ("--generate.shards", "8", "--generate.shard", "0")
    assert _generate(tiny_models, trained[0], tmp_path / "out", tmp_path / "e", *shard) == 0


@pytest.mark.parametrize("damage", ["shape", "manifest", "nan", "width"])
def test_damaged_embeddings_are_named(
    damage: str, trained: tuple[Path, Path], tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora, embeddings = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_FILE).write_text((embeddings / MANIFEST_FILE).read_text(encoding="utf-8"), encoding="utf-8")
    tensors = load_file(str(embeddings / TENSOR_FILE))
    if damage == "shape":
        tensors["hidden.3"] = tensors["hidden.3"][:10]
    elif damage == "nan":
        tensors["pooled.0"] = torch.full_like(tensors["pooled.0"], float("nan"))
    elif damage == "width":  # consistent with itself, not with the text encoder its manifest names (was a matmul error)
        tensors = {name: tensor[..., :8].contiguous() for name, tensor in tensors.items()}
    else:
        (broken / MANIFEST_FILE).write_text("not json", encoding="utf-8")
    save_file(tensors, str(broken / TENSOR_FILE))
    mark_complete(broken)
    assert _generate(tiny_models, lora, tmp_path / "out", broken) == 2
    error = capsys.readouterr().err
    assert str(broken / (MANIFEST_FILE if damage == "manifest" else TENSOR_FILE)) in error and "rerun train" in error
