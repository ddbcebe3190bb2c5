"""`kolora notify`: POST a finished run's outcome to a webhook (the workflow's exit handler).

The Argo workflow runs it on exit with the run's status and the workflow outputs of check-changes (`training`)
and evaluate (`gate`, `mean-aesthetic`). An output that was never set (that step did not run) reaches it as
Argo leaves it, the literal `{{workflow.outputs.parameters...}}`, and is sent as null. The body is JSON:

    {"workflow": "kolora-run-x7k2p", "status": "Succeeded", "outcome": "promoted", "training": "changed",
     "gate": "passed", "mean_aesthetic": 6.41}

`outcome` is one word for a chat message: `failed` (status other than Succeeded), `unchanged` (nothing to
train: the nightly's `on-unchanged=skip`), `promoted` (gate passed), `not-promoted` (gate failed or skipped).
An empty `--url` sends nothing. A webhook that cannot be reached is retried three times and then only
logged, as is a `--url` that is not an http(s) URL with a host (`kolora run` and `kolora submit` refuse such a
`notify-url` before the run starts): a notification never turns a finished run into a failed one (Argo fails
the workflow when its exit handler fails). The other arguments take only what the workflow passes (a status,
`changed`/`unchanged`, a gate, a number, or unset); a hand-typed typo is refused with exit 2.

Example:
    kolora notify --url https://hooks.example/kolora --workflow kolora-run-x7k2p --status Succeeded --gate passed
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from kolora_core.cli.notify_url import url_problem
from kolora_core.evaluation.gate import FAILED, PASSED, SKIPPED
from kolora_core.release.changes import CHANGED, UNCHANGED
from workflows.options import ON_UNCHANGED

ATTEMPTS = 3
TIMEOUT_S = 10.0
STATUSES = ("Succeeded", "Failed", "Error")  # Argo's {{workflow.status}} in an exit handler


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="POST a run's status, gate and mean aesthetic score to a webhook (the workflow's exit handler)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="", help="webhook URL; '' (default) sends nothing")
    parser.add_argument("--workflow", default="", help="the run's name")
    parser.add_argument("--status", required=True, choices=STATUSES, help="the run's status")
    parser.add_argument("--training", type=_output(CHANGED, UNCHANGED), default="", help="check-changes' decision")
    parser.add_argument("--on-unchanged", choices=ON_UNCHANGED, default=ON_UNCHANGED[0], help="the run's on-unchanged parameter")
    parser.add_argument("--gate", type=_output(PASSED, FAILED, SKIPPED), default="", help="evaluate's gate")
    parser.add_argument("--mean-aesthetic", type=_score, default="", help="evaluate's mean aesthetic score")
    parser.set_defaults(func=_notify_command)


def _unset(value: str) -> bool:
    """'' and an Argo variable left unresolved (the step that sets it did not run): sent as null, not refused."""
    return not value or (value.startswith("{{") and value.endswith("}}"))


def _output(*choices: str) -> Callable[[str], str | None]:
    """An argparse type for a workflow output: one of `choices` or unset (None). A typo in a hand-typed call is
    refused rather than sent as a gate no one can act on."""

    def parse(value: str) -> str | None:
        if _unset(value):
            return None
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(choices)} ('' = not set)")
        return value

    return parse


def _score(value: str) -> float | None:
    """The mean-aesthetic output: a number, or unset (None); a non-finite one is null too (JSON has no NaN)."""
    if _unset(value):
        return None
    try:
        score = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number ('' = not scored)") from None
    return score if math.isfinite(score) else None


def payload(args: argparse.Namespace) -> dict[str, Any]:
    training, gate, score = args.training, args.gate, args.mean_aesthetic
    if args.status != "Succeeded":
        outcome = "failed"
    elif training == "unchanged" and args.on_unchanged == "skip":
        outcome = "unchanged"
    else:
        outcome = "promoted" if gate == "passed" else "not-promoted"
    return {
        "workflow": args.workflow,
        "status": args.status,
        "outcome": outcome,
        "training": training,
        "gate": gate,
        "mean_aesthetic": score,
    }


def post(url: str, body: dict[str, Any], attempts: int = ATTEMPTS, timeout: float = TIMEOUT_S) -> str | None:
    """POST `body` as JSON; None when delivered, else the last reason it was not."""
    data = json.dumps(body).encode()
    reason = None
    for attempt in range(attempts):
        try:
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        except (ValueError, http.client.HTTPException) as exc:  # a URL urllib refuses, a reply that is not HTTP
            reason = type(exc).__name__  # its text may quote the URL, which may hold a token
        if attempt + 1 < attempts:
            time.sleep(2**attempt)
    return reason


def _notify_command(args: argparse.Namespace) -> int:
    body = payload(args)
    if not args.url:
        print(f"kolora notify: no --url, nothing sent ({body['outcome']})")
        return 0
    problem = url_problem(args.url)
    if problem:  # not quoted: the URL may hold a token
        print(
            f"kolora notify: warning: --url is not a webhook URL ({problem}); nothing sent, the run is not affected",
            file=sys.stderr,
        )
        return 0
    reason = post(args.url, body)
    if reason is None:
        print(f"kolora notify: sent {body['outcome']} to the webhook")
    else:
        print(f"kolora notify: warning: the webhook did not take it ({reason}); the run is not affected", file=sys.stderr)
    return 0
