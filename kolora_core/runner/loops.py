"""Argo's loops over a task: withItems, withParam, withSequence, and the `{{item}}` scope of each iteration."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import substitute
from kolora_core.runner.spec import TaskSpec

Hint = Callable[[str], str]


def loop_items(task: TaskSpec, scope: dict[str, str], hint: Hint) -> list[Any]:
    """The items a fanned-out task runs over, after substitution."""
    where = f"task '{task.name}'"
    if task.with_items is not None:
        return [_substitute_item(i, scope, where, hint) for i in task.with_items]
    if task.with_param is not None:
        text = substitute(task.with_param, scope, where, hint)
        try:
            items = json.loads(text)
        except ValueError:
            raise KoloraError(f"{where}: withParam value could not be parsed as a JSON list: {text[:80]}") from None
        if not isinstance(items, list):
            raise KoloraError(f"{where}: withParam value is not a JSON list: {text[:80]}")
        return items
    seq = task.with_sequence
    assert seq is not None
    values = {k: substitute(v, scope, where, hint) if v is not None else None for k, v in vars(seq).items()}
    return _sequence(values, where)


def item_scope(item: Any) -> dict[str, str]:
    scope = {"item": item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))}
    if isinstance(item, dict):
        for key, value in item.items():
            scope[f"item.{key}"] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return scope


def item_label(item: Any) -> str:
    """How Argo names an iteration in its node name: `task(<index>:<label>)`."""
    if isinstance(item, dict):
        return ",".join(f"{k}:{v}" for k, v in sorted(item.items()))
    return item if isinstance(item, str) else json.dumps(item)


def _substitute_item(item: Any, scope: dict[str, str], where: str, hint: Hint) -> Any:
    if isinstance(item, str):
        return substitute(item, scope, where, hint)
    if isinstance(item, dict):
        return {k: _substitute_item(v, scope, where, hint) for k, v in item.items()}
    return item


def _sequence(values: dict[str, str | None], where: str) -> list[str]:
    """Argo's withSequence: `count` (from `start`, default 0) or `start`..`end` inclusive, optional printf format."""
    try:
        start = int(values["start"] or 0)
        if values["count"] not in (None, ""):
            if values["end"] not in (None, ""):
                raise KoloraError(f"{where}: withSequence takes count or end, not both")
            numbers = list(range(start, start + int(values["count"] or 0)))
        elif values["end"] not in (None, ""):
            end = int(values["end"] or 0)
            numbers = list(range(start, end + 1)) if end >= start else list(range(start, end - 1, -1))
        else:
            raise KoloraError(f"{where}: withSequence needs count or end")
    except ValueError:
        raise KoloraError(f"{where}: withSequence count/start/end must be integers, got {values}") from None
    fmt = values.get("format")
    if fmt:
        try:
            return [fmt % n for n in numbers]
        except (TypeError, ValueError):
            raise KoloraError(f"{where}: withSequence format '{fmt}' is not a printf format for an integer") from None
    return [str(n) for n in numbers]
