"""How an `"auto"`-able setting is resolved, shared by the stages: each decides what auto picks on its machine (a
threshold, a device), and this keeps every non-auto value as written, so a new choice such as `compile: whole`
passes through without a special case."""

from __future__ import annotations

from typing import Literal, TypeVar

T = TypeVar("T")


def auto(value: T | Literal["auto"], default: T) -> T:
    """`default` stands for what auto picks here; any other value is kept."""
    return default if value == "auto" else value
