"""How much of a text Kolors' text encoder reads, counted as diffsynth's `KolorsPrompter` counts it.

`KolorsPrompter.encode_prompt` tokenizes every text to `TOKENS` (256) ChatGLM3 tokens with `truncation=True`, the
2 prefix tokens ChatGLM3 puts first ([gMASK], sop) included, and says nothing of what it cuts. generate (story
prompts, `kolora_core.inference.prompt_length`) and train (captions, `kolora_core.training.captions`) both say so;
this is the count they share, made with the prompter's own tokenizer (diffsynth's bundled ChatGLM3 sentencepiece
tokenizer, no model weights; ~0.16 s to load, once per process).

Cost, measured on the 2-core CPU machine of the tests: 5000 distinct captions of 26-331 tokens (mean 166) take
1.2 s in one tokenizer call. The time is transformers' Python loop of a slow tokenizer, not the model, and the
sentencepiece model underneath does the same 5000 in 0.03 s; it is not called directly, because the tokenizer's own
call (special-token splitting, prefix tokens) is what the prompter runs. Train counts once per run, beside minutes
of model loading.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kolora_core.models.prompt_embeddings import TOKENS

SHOWN = 12  # characters of the cut-off text a warning quotes


@functools.cache
def tokenizer() -> Any:
    """`KolorsPrompter().tokenizer`, loaded once per process (it is only read)."""
    from diffsynth.prompters import KolorsPrompter

    return KolorsPrompter().tokenizer


@dataclass(frozen=True)
class Cut:
    """A text longer than the encoder reads: its token ids, prefix tokens included."""

    ids: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return len(self.ids)

    @property
    def lost_tokens(self) -> int:
        return self.tokens - TOKENS

    def lost(self) -> str:
        """The text from where the cut falls on: what never reaches the encoder."""
        return tokenizer().decode(list(self.ids[TOKENS:]))

    def shown(self) -> str:
        """The start of `lost()`, as a warning quotes it."""
        lost = self.lost()
        return lost if len(lost) <= SHOWN else lost[:SHOWN] + "..."


def cuts(texts: Sequence[str]) -> dict[str, Cut]:
    """Each distinct text of `texts` that the encoder reads only in part, tokenized in one call."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return {}
    ids = tokenizer()(distinct)["input_ids"]
    return {text: Cut(tuple(found)) for text, found in zip(distinct, ids, strict=True) if len(found) > TOKENS}


class Render(Protocol):
    """One image to render: generate's story job, train's validation request."""

    prompt: str
    negative_prompt: str
    cfg_scale: float


R = TypeVar("R", bound=Render)


def cut_renders(renders: Sequence[R]) -> list[tuple[R, str, Cut]]:
    """(render, "prompt" or "negative prompt", its cut) for each text of `renders` the encoder reads only in part.
    The negative prompt counts only with CFG: at cfg_scale 1 the samplers never encode it."""
    wanted = [(render, what, text) for render in renders for what, text in _encoded(render).items()]
    found = cuts([text for _, _, text in wanted])
    return [(render, what, found[text]) for render, what, text in wanted if text in found]


def _encoded(render: Render) -> dict[str, str]:
    texts = {"prompt": render.prompt}
    if render.cfg_scale != 1.0:
        texts["negative prompt"] = render.negative_prompt
    return texts
