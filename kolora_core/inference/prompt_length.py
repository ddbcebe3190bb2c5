"""Prompts longer than Kolors' text encoder reads, said before they are rendered.

diffsynth's `KolorsPrompter` (both engines, and train's prompt-embeddings) tokenizes every text to ChatGLM3's 256
tokens with `truncation=True`: the end of a longer prompt (or negative prompt) never reaches the image, without a
word, and the records, the A1111 infotext and the report still show the whole text. A1111's users are used to
prompts of any length (it encodes 75-token chunks), so a long story prompt is a likely mistake that the images
alone would not reveal. Counted with the prompter's own tokenizer (`kolora_core.models.text_length`, shared with
train's caption check).
"""

from __future__ import annotations

import logging

from kolora_core.inference.story import Job
from kolora_core.models.prompt_embeddings import TOKENS
from kolora_core.models.text_length import cut_renders

log = logging.getLogger("kolora.generate")


def warn_overlong(jobs: list[Job]) -> None:
    """One warning line per text of `jobs` the encoder reads only in part."""
    for job, what, cut in cut_renders(jobs):
        log.warning(
            "story #%d: the %s is %d tokens, the text encoder (ChatGLM3) reads %d: from '%s' on (%d tokens) it "
            "does not reach the image; shorten it",
            job.index,
            what,
            cut.tokens,
            TOKENS,
            cut.shown(),
            cut.lost_tokens,
        )
