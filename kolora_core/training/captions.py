"""Training captions longer than Kolors' text encoder reads, said once before the first step.

Both engines encode a caption through diffsynth's `KolorsPrompter`, which cuts every text at ChatGLM3's 256 tokens
without a word: an image whose caption is longer trains the LoRA on the caption's first part only, and nothing in
the outputs shows it. A dataset can hold thousands of captions, so this is one warning line for all of them (how
many, the longest, the first few file names, what to do), counted with the prompter's own tokenizer
(`kolora_core.models.text_length`, shared with generate's prompt check; ~1.2 s per 5000 distinct captions).

It runs in `run_train` on the trainset's rows, before any model is loaded or a DDP rank is spawned: once per run,
a resumed run included (the caption cache lives in memory and is rebuilt each run, so nothing skips the check).
How many were cut goes to train_summary.json (`cut_captions`), so a run's record says it without its log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kolora_core.data.layout import TRAIN_DIR, TRAIN_METADATA
from kolora_core.models.prompt_embeddings import TOKENS
from kolora_core.models.text_length import cuts

log = logging.getLogger("kolora.train")
NAMED = 3  # file names of cut captions listed in the warning


def warn_cut_captions(trainset: Path, rows: list[tuple[str, str]]) -> int:
    """One warning line when any (file_name, caption) of `rows` is longer than the text encoder reads; returns how
    many images have such a caption."""
    found = cuts([text for _, text in rows])
    cut = [(name, found[text].tokens) for name, text in rows if text in found]
    if not cut:
        return 0
    longest, tokens = max(cut, key=lambda item: item[1])  # the first of the longest, in trainset order
    named = ", ".join(name for name, _ in cut[:NAMED]) + (f" and {len(cut) - NAMED} more" if len(cut) > NAMED else "")
    log.warning(
        "%d of %d captions in %s are longer than the text encoder reads (ChatGLM3: %d tokens, its 2 prefix tokens "
        "included): those images train on the first %d tokens of their caption only; the longest is %s's (%d tokens); "
        "cut: %s. Shorten these captions in the dataset's metadata (the captions ingest read) and rerun ingest and filter",
        len(cut),
        len(rows),
        trainset / TRAIN_DIR / TRAIN_METADATA,
        TOKENS,
        TOKENS,
        longest,
        tokens,
        named,
    )
    return len(cut)
