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
from kolora_core.models.text_length import cuts

log = logging.getLogger("kolora.generate")
SHOWN = 12  # characters of the cut-off text quoted in the warning


def warn_overlong(jobs: list[Job]) -> None:
    """One warning line per text of `jobs` the encoder reads only in part."""
    wanted = [(job, what, text) for job in jobs for what, text in _encoded(job).items()]
    found = cuts([text for _, _, text in wanted])
    for job, what, text in wanted:
        cut = found.get(text)
        if cut is None:
            continue
        lost = cut.lost()
        shown = lost if len(lost) <= SHOWN else lost[:SHOWN] + "..."
        log.warning(
            "story #%d: the %s is %d tokens, the text encoder (ChatGLM3) reads %d: from '%s' on (%d tokens) it "
            "does not reach the image; shorten it",
            job.index,
            what,
            cut.tokens,
            TOKENS,
            shown,
            cut.lost_tokens,
        )


def _encoded(job: Job) -> dict[str, str]:
    """The texts the engines encode for `job`, by what the warning calls them."""
    texts = {"prompt": job.prompt}
    if job.cfg_scale != 1.0:  # without CFG the negative prompt is not encoded (needed_texts)
        texts["negative prompt"] = job.negative_prompt
    return texts
