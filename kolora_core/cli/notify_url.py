"""The `notify-url` workflow parameter (docs/argo.md "Notifications"), checked alike by `kolora run` and
`kolora submit` before any step runs, and by `kolora notify` itself: the exit handler runs after every step, so a
URL it cannot POST to would only be found out once the run is over (and must not fail it then)."""

from __future__ import annotations

import urllib.parse

from kolora_core.errors import KoloraError

NOTIFY_URL_PARAM = "notify-url"
SCHEMES = ("http", "https")


def url_problem(url: str) -> str | None:
    """Why `url` is not a webhook `kolora notify` can POST to (urllib's own checks, found before sending), or None."""
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return "it holds spaces, control or non-ASCII characters (percent-encode them)"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        return "its host or port cannot be parsed"
    if parts.scheme not in SCHEMES:
        return "it does not start with http:// or https://"
    if not parts.hostname:
        return "it has no host"
    return None


def check_notify_url(params: dict[str, str]) -> None:
    """`-p notify-url`, '' = none; anything else an http(s) URL with a host."""
    url = params.get(NOTIFY_URL_PARAM)
    problem = url_problem(url) if url else None
    if problem:
        raise KoloraError(
            f"-p {NOTIFY_URL_PARAM}={url!r}: {problem}; give the webhook's whole URL, e.g. "
            f"https://hooks.example.com/kolora ('' = no notification)"
        )
