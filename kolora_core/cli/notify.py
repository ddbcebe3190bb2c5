"""`kolora notify`: POST a finished run's outcome to a webhook (the workflow's exit handler).

The Argo workflow runs it on exit with the run's status and the workflow outputs of check-changes (`training`)
and evaluate (`gate`, `mean-aesthetic`). An output that was never set (that step did not run) reaches it as
Argo leaves it, the literal `{{workflow.outputs.parameters...}}`, and is sent as null. The body is JSON:

    {"workflow": "kolora-run-x7k2p", "status": "Succeeded", "outcome": "promoted", "training": "changed",
     "gate": "passed", "mean_aesthetic": 6.41}

`outcome` is one word for a chat message: `failed` (status other than Succeeded), `unchanged` (nothing to
train: the nightly's `on-unchanged=skip`), `promoted` (gate passed), `not-promoted` (gate failed or skipped).
An empty `--url` sends nothing. A webhook that cannot be reached is retried three times and then only
logged: a notification never turns a finished run into a failed one (Argo fails the workflow when its exit
handler fails).

Example:
    kolora notify --url https://hooks.example/kolora --workflow kolora-run-x7k2p --status Succeeded --gate passed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

ATTEMPTS = 3
TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="POST a run's status, gate and mean aesthetic score to a webhook (the workflow's exit handler)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="", help="webhook URL; '' (default) sends nothing")
    parser.add_argument("--workflow", default="", help="the run's name")
    parser.add_argument("--status", required=True, help="the run's status (Succeeded, Failed, Error)")
    parser.add_argument("--training", default="", help="check-changes' decision: changed | unchanged")
    parser.add_argument("--on-unchanged", default="train", help="the run's on-unchanged parameter: train | skip")
    parser.add_argument("--gate", default="", help="evaluate's gate: passed | failed | skipped")
    parser.add_argument("--mean-aesthetic", default="", help="evaluate's mean aesthetic score")
    parser.set_defaults(func=_notify_command)


def _given(value: str) -> str | None:
    """None for '' and for an Argo variable left unresolved (the step that sets it did not run)."""
    return None if not value or value.startswith("{{") else value


def payload(args: argparse.Namespace) -> dict[str, Any]:
    training, gate = _given(args.training), _given(args.gate)
    mean = _given(args.mean_aesthetic)
    try:
        score = float(mean) if mean is not None else None
    except ValueError:
        score = None
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
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if attempt + 1 < attempts:
            time.sleep(2**attempt)
    return reason


def _notify_command(args: argparse.Namespace) -> int:
    body = payload(args)
    if not args.url:
        print(f"kolora notify: no --url, nothing sent ({body['outcome']})")
        return 0
    reason = post(args.url, body)
    if reason is None:
        print(f"kolora notify: sent {body['outcome']} to the webhook")
    else:
        print(f"kolora notify: warning: the webhook did not take it ({reason}); the run is not affected", file=sys.stderr)
    return 0
