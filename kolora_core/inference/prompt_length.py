"""Prompts longer than Kolors' text encoder reads, said before they are rendered.

diffsynth's `KolorsPrompter` (both engines, and train's prompt-embeddings) tokenizes every text to ChatGLM3's 256
tokens with `truncation=True`: the end of a longer prompt (or negative prompt) never reaches the image, without a
word, and the records, the A1111 infotext and the report still show the whole text. A1111's users are used to
prompts of any length (it encodes 75-token chunks), so a long story prompt is a likely mistake that the images
alone would not reveal. Counted with the tokenizer the prompter itself uses (diffsynth's bundled ChatGLM3
tokenizer, ~0.1 s to load; no model weights).
"""

from __future__ import annotations

import logging

from kolora_core.inference.story import Job
from kolora_core.models.prompt_embeddings import TOKENS

log = logging.getLogger("kolora.generate")
SHOWN = 12  # characters of the cut-off text quoted in the warning


def warn_overlong(jobs: list[Job]) -> None:
    """One warning line per text of `jobs` the encoder reads only in part."""
    from diffsynth.prompters import KolorsPrompter

    tokenizer = KolorsPrompter().tokenizer
    for job in jobs:
        texts = {"prompt": job.prompt}
        if job.cfg_scale != 1.0:  # without CFG the negative prompt is not encoded (needed_texts)
            texts["negative prompt"] = job.negative_prompt
        for what, text in texts.items():
            ids = tokenizer(text)["input_ids"]  # with ChatGLM3's 2 prefix tokens, which count against the 256
            if len(ids) <= TOKENS:
                continue
            lost = tokenizer.decode(ids[TOKENS:])
            shown = lost if len(lost) <= SHOWN else lost[:SHOWN] + "..."
            log.warning(
                "story #%d: the %s is %d tokens, the text encoder (ChatGLM3) reads %d: from '%s' on (%d tokens) it "
                "does not reach the image; shorten it",
                job.index,
                what,
                len(ids),
                TOKENS,
                shown,
                len(ids) - TOKENS,
            )
