"""Snapshots of model repos from the Hugging Face hub or ModelScope, with each failure sorted: fix the config, or retry.

fetch-models is the only stage that downloads weights, from two hubs whose `snapshot_download` take the same
arguments (repo id, revision, allow_patterns, local_dir; both skip files already complete in local_dir) and
raise different exception types. This module hides that difference and decides, for each failure, whether
running the step again could help:

* the hub answered that the repo, the revision or a file does not exist, or refused access (private or gated
  repo, no token): `KoloraError`, exit 2, which the workflow never retries, since the config names the wrong thing;
* anything else (connection refused, DNS, timeouts, HTTP 5xx and 429, an unknown error): `TransientError`,
  exit 75, which the workflow's retryStrategy retries like a preempted pod.

Progress: the clients' own tqdm bars are off in stage processes (`kolora_core/logs.py`); instead the target
directory's growth is logged every 30 s and at the end (`kolora_core.progress.watch_growth`).

Mirrors: `HF_ENDPOINT` (e.g. https://hf-mirror.com) and `MODELSCOPE_DOMAIN` are read by the hub clients
themselves; tokens from `HF_TOKEN` / `MODELSCOPE_API_TOKEN`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from kolora_core.config import HUB_SCHEMES
from kolora_core.errors import KoloraError, TransientError
from kolora_core.progress import watch_growth

log = logging.getLogger("kolora.fetch")

HUB_NAMES = {"hf": "the Hugging Face hub", "modelscope": "ModelScope"}
TOKEN_VARS = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}


@dataclass(frozen=True)
class HubRepo:
    """One repo at one revision, and the config field that named it (every message points back to it)."""

    scheme: str
    repo_id: str
    revision: str | None
    field: str

    @classmethod
    def parse(cls, reference: str, revision: str | None, field: str) -> HubRepo:
        """`hf://owner/name` or `modelscope://owner/name` (the config validated the form already)."""
        scheme, sep, repo_id = reference.partition("://")
        if not sep or scheme not in HUB_SCHEMES or not repo_id:
            raise KoloraError(f"{field}: {reference!r} is not hf://<owner>/<name> or modelscope://<owner>/<name>")
        return cls(scheme, repo_id, revision, field)

    @property
    def reference(self) -> str:
        return f"{self.scheme}://{self.repo_id}"

    def __str__(self) -> str:
        return f"{self.reference} (revision {self.revision or 'default'}, {self.field})"


def snapshot(repo: HubRepo, allow_patterns: list[str], local_dir: Path) -> None:
    """Download the files of `repo` matching `allow_patterns` into `local_dir`, leaving only the repo's files there."""
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        with watch_growth(log, f"downloading {repo.reference} ({', '.join(allow_patterns)})", local_dir):
            _download(repo, allow_patterns, local_dir)
    except Exception as exc:  # both clients raise many types (HTTP, hub, IO); each is sorted below
        what = f"downloading {', '.join(allow_patterns)} of {repo} from {HUB_NAMES[repo.scheme]} failed"
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        refusal = _refusal(repo, exc)
        if refusal is not None:
            raise KoloraError(f"{what}: {refusal} ({detail}); fix {repo.field} or its revision") from exc
        raise TransientError(f"{what} ({detail}); check network access to the hub, then retry") from exc
    for entry in local_dir.iterdir():  # the clients' bookkeeping (.cache/huggingface, ._____temp), not repo files
        if entry.name.startswith(".") and entry.is_dir():
            shutil.rmtree(entry)
        elif entry.name.startswith("."):
            entry.unlink()


def _download(repo: HubRepo, allow_patterns: list[str], local_dir: Path) -> None:
    if repo.scheme == "hf":
        from huggingface_hub import snapshot_download as hf_snapshot

        hf_snapshot(repo.repo_id, revision=repo.revision, allow_patterns=allow_patterns, local_dir=str(local_dir))
    else:
        from modelscope.hub.snapshot_download import snapshot_download as ms_snapshot

        ms_snapshot(repo.repo_id, revision=repo.revision, allow_patterns=allow_patterns, local_dir=str(local_dir))


def _refusal(repo: HubRepo, exc: Exception) -> str | None:
    """Why the hub refused, in words, when a rerun would be refused the same way; None when a retry may succeed."""
    token = TOKEN_VARS[repo.scheme]
    if repo.scheme == "hf":
        from huggingface_hub import errors as hf

        if isinstance(exc, hf.LocalEntryNotFoundError):  # the hub was unreachable and nothing is cached
            return None
        if isinstance(exc, hf.GatedRepoError):
            return f"the repo is gated: accept its conditions on the hub and set {token}"
        if isinstance(exc, hf.RepositoryNotFoundError):
            return f"no such repo (or it is private: set {token})"
        if isinstance(exc, hf.RevisionNotFoundError):
            return f"the repo has no revision {repo.revision!r}"
        if isinstance(exc, hf.EntryNotFoundError):
            return "a file the repo lists is not there"
        if isinstance(exc, hf.HFValidationError):
            return "not a valid repo id"
        return _http_refusal(_status(exc), token)
    from modelscope.hub import errors as ms

    if isinstance(exc, ms.NotExistError):
        return f"no such repo or revision (or it is private: set {token})"
    if isinstance(exc, ms.AuthenticationError | ms.PermissionDeniedError):
        return f"access denied: set {token}"
    if isinstance(exc, ms.InvalidParameter):
        return "not a valid repo id or revision"
    return _http_refusal(_status(exc), token)


def _status(exc: Exception) -> int | None:
    """The HTTP status behind a client exception, where it carries one (requests' response, ModelScope's APIError)."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else getattr(getattr(exc, "response", None), "status_code", None)


def _http_refusal(status: int | None, token: str) -> str | None:
    """4xx (but 408 timeout and 429 rate limit) is the hub's answer about this repo; 5xx and no answer are transient."""
    if status in (401, 403):
        return f"access denied (HTTP {status}): set {token}"
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return f"the hub refused the request (HTTP {status})"
    return None
