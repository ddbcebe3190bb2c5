"""Captions longer than the text encoder reads: the train stage says so once, before the first step."""

from __future__ import annotations

from pathlib import Path

import pytest

from kolora_core.training.captions import warn_cut_captions
from tests.conftest import write_trainset
from tests.training.helpers import train

LINE = "二次元,一个紫色短发小女孩,穿着粉色吊带漏肩连衣裙,在练习室练习唱歌,手持话筒,"  # 12 of them: 327 tokens


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "kolora.train"]


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


def test_short_captions_are_not_warned_about(tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainset = _with_captions(tmp_path / "trainset", ["二次元", LINE * 9, "二次元,短发", "二次元"])  # 9 lines: 246 tokens
    with caplog.at_level("WARNING", logger="kolora.train"):
        assert train(tiny_models, trainset, tmp_path / "lora", "--train.steps", "1") == 0
    assert _warnings(caplog) == []


def test_many_cut_captions_are_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of captions give one line: the count, the longest (first of equals), the first 3 names."""
    rows = [(f"{i}.png", "二次元" if i % 2 else LINE * (12 + (i == 6))) for i in range(2000)]
    with caplog.at_level("WARNING", logger="kolora.train"):
        warn_cut_captions(tmp_path, rows)
    (line,) = _warnings(caplog)
    assert line.startswith(f"1000 of 2000 captions in {tmp_path / 'train' / 'metadata.csv'} are longer")
    assert "the longest is 6.png's (354 tokens); cut: 0.png, 2.png, 4.png and 997 more. Shorten" in line
