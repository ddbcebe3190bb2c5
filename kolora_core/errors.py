"""The one error type kolora shows to users.

Every failure a user can fix (bad config, missing input, unreachable S3) is raised as a
`KoloraError` whose message is a single line naming the file or field and what to do. The stage
CLIs and the runner print it as `kolora <stage>: error: <message>` and exit non-zero, instead of a
traceback that buries the cause.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KoloraError(Exception):
    """A user-facing failure with a one-line, actionable message."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class TransientError(KoloraError):
    """A failure that a retry may not repeat (network down, hub timeout, 5xx, rate limit, an S3 store that refuses
    connections, stops answering or answers 503 SlowDown): still one line, but exit 75.

    75 is sysexits' EX_TEMPFAIL. The workflow retries every exit code except KoloraError's 2 (a user error a
    rerun repeats), so a download that failed on the network is retried while a repo that does not exist is not.
    """

    exit_code: int = 75


class Terminated(KoloraError):
    """Stopped by SIGTERM after saving what a rerun resumes from: one line, exit 143 (128 + 15, as a shell reports
    a SIGTERM death). Not a user error: the workflow retries it, and the retry continues from the saved state."""

    exit_code: int = 143


def name_some(names: list[str], limit: int) -> str:
    """The first `limit` names and how many more: a one-line message names what it is about without a listing."""
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` most likely misspells (difflib's, cutoff 0.6), or None: a message names that one
    (`did you mean steps?`) rather than listing every choice for the user to search."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None
