"""Captions and validation prompts longer than the text encoder reads: the train stage says so before the first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolora_core.config import load_config
from kolora_core.training.captions import warn_cut_captions
from kolora_core.training.validation import warn_cut_prompts
from tests.conftest import write_trainset
from tests.training.helpers import train

LINE = "二次元,一个紫色短发小女孩,穿着粉色吊带漏肩连衣裙,在练习室练习唱歌,手持话筒,"  # 12 of them: 327 tokens


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "kolora.train"]


def _cut_captions(lora: Path) -> int:
    return json.loads((lora / "train_summary.json").read_text(encoding="utf-8"))["cut_captions"]


def _with_captions(root: Path, captions: list[str]) -> Path:
    """The tests' tiny trainset with one caption per image."""
    write_trainset(root, count=len(captions))
    metadata = root / "train" / "metadata.csv"
    rows = [f'{i}.png,"{caption}"' for i, caption in enumerate(captions)]
    metadata.write_text("\n".join(["file_name,text", *rows]) + "\n", encoding="utf-8")
    return root


def test_a_caption_longer_than_the_text_encoder_reads_is_said(
    tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """KolorsPrompter cuts every caption at ChatGLM3's 256 tokens without a word: image 2 trained on the first part
    of its caption only. Now one warning line names it, its token count, and what to do."""
    trainset = _with_captions(tmp_path / "trainset", ["二次元", "二次元,短发", LINE * 12, "二次元"])
    with caplog.at_level("WARNING", logger="kolora.train"):
        assert train(tiny_models, trainset, tmp_path / "lora", "--train.steps", "1") == 0
    assert _warnings(caplog) == [
        f"1 of 4 captions in {trainset / 'train' / 'metadata.csv'} are longer than the text encoder reads (ChatGLM3: "
        "256 tokens, its 2 prefix tokens included): those images train on the first 256 tokens of their caption only; "
        "the longest is 2.png's (327 tokens); cut: 2.png. Shorten these captions in the dataset's metadata (the "
        "captions ingest read) and rerun ingest and filter"
    ]
    assert _cut_captions(tmp_path / "lora") == 1  # the run's record says it too, not only its log


def test_short_captions_are_not_warned_about(tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainset = _with_captions(tmp_path / "trainset", ["二次元", LINE * 9, "二次元,短发", "二次元"])  # 9 lines: 246 tokens
    with caplog.at_level("WARNING", logger="kolora.train"):
        assert train(tiny_models, trainset, tmp_path / "lora", "--train.steps", "1") == 0
    assert _warnings(caplog) == []
    assert _cut_captions(tmp_path / "lora") == 0


def test_many_cut_captions_are_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of captions give one line: the count, the longest (first of equals), the first 3 names."""
    rows = [(f"{i}.png", "二次元" if i % 2 else LINE * (12 + (i == 6))) for i in range(2000)]
    with caplog.at_level("WARNING", logger="kolora.train"):
        warn_cut_captions(tmp_path, rows)
    (line,) = _warnings(caplog)
    assert line.startswith(f"1000 of 2000 captions in {tmp_path / 'train' / 'metadata.csv'} are longer")
    assert "the longest is 6.png's (354 tokens); cut: 0.png, 2.png, 4.png and 997 more. Shorten" in line


def _validation_config(root: Path, prompts: list[dict[str, object]]) -> Path:
    config = root / "validation.json"
    config.write_text(json.dumps({"train": {"validation_prompts": prompts}}, ensure_ascii=False), encoding="utf-8")
    return config


def test_a_validation_prompt_longer_than_the_text_encoder_reads_is_said(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The validation prompts go through the same prompter: #1's end never reached its images, and nothing said so
    (generate checks the story, not these). Now one line per cut text, naming the prompt; #0 is short, and #1's
    negative prompt is not encoded at all (cfg_scale 1: no negative-prompt pass)."""
    prompts = [
        {"prompt": "二次元", "negative_prompt": LINE * 12, "seed": 1},
        {"prompt": LINE * 12, "negative_prompt": LINE * 12, "seed": 2, "cfg_scale": 1.0},
    ]
    flags = ["--config", str(_validation_config(tmp_path, prompts)), "--train.steps", "1"]
    with caplog.at_level("WARNING", logger="kolora.train"):
        validate = ["--train.validation_every", "1", "--train.validation_steps", "1"]
        assert train(tiny_models, tiny_trainset, tmp_path / "lora", *flags, *validate) == 0
    assert _warnings(caplog) == [
        "validation prompt #0 (train.validation_prompts[0]): the negative prompt is 327 tokens, the text encoder "
        "(ChatGLM3) reads 256: from '粉色吊带漏肩连衣裙,在练...' on (71 tokens) it does not reach the validation images "
        "(validation/step-*-0.png); shorten it in train.validation_prompts",
        "validation prompt #1 (train.validation_prompts[1]): the prompt is 327 tokens, the text encoder (ChatGLM3) "
        "reads 256: from '粉色吊带漏肩连衣裙,在练...' on (71 tokens) it does not reach the validation images "
        "(validation/step-*-1.png); shorten it in train.validation_prompts",
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kolora.train"):  # without validation_every the prompts are not encoded
        assert train(tiny_models, tiny_trainset, tmp_path / "off", *flags) == 0
    assert _warnings(caplog) == []


def test_the_story_prompts_validation_renders_are_named_as_the_story_s(caplog: pytest.LogCaptureFixture) -> None:
    """Without train.validation_prompts the story's first two are rendered: the line says where to shorten them."""
    story = [{"prompt": "二次元"}, {"prompt": LINE * 12}, {"prompt": LINE * 12}]
    config = load_config("smoke", overrides={"generate.prompts": story, "generate.cfg_scale": 1.0})
    with caplog.at_level("WARNING", logger="kolora.train"):
        warn_cut_prompts(config)
    (line,) = _warnings(caplog)  # story #2 is not a validation prompt
    assert line.startswith("validation prompt #1 (story #1; train.validation_prompts is unset): the prompt is 327 tokens")
    assert line.endswith("(validation/step-*-1.png); shorten it in the story, or set train.validation_prompts")
