"""Reading the user's text files (config, prompts): every way one can be unreadable is one line naming it, and
a key written twice is refused by the YAML and JSON parsers here instead of the last one silently winning.

A config or prompts file is hand-written, often on another system: saved as Latin-1 or GBK, with a BOM,
or the path is a directory. Each is a user error (exit 2, never retried), so it must not surface as a
UnicodeDecodeError or IsADirectoryError traceback (exit 1, which Argo retries pointlessly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kolora_core.errors import KoloraError


def read_text(path: Path, what: str, expected: str) -> str:
    """The UTF-8 text of `path` (a BOM is accepted); `what` names it ("config file"), `expected` the fix."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KoloraError(f"{what} {path} does not exist: {expected}") from None
    except IsADirectoryError:
        raise KoloraError(f"{what} {path} is a directory: {expected}") from None
    except OSError as exc:
        raise KoloraError(f"{what} {path} cannot be read ({exc.strerror or exc}): {expected}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise KoloraError(
            f"{what} {path} is not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}): re-save it as UTF-8"
        ) from None


class DuplicateKey(ValueError):
    """A key written twice in one mapping: YAML and JSON parsers keep the last silently, which hides a typo'd edit."""


def unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """`json.loads`'s object_pairs_hook: the mapping, or DuplicateKey."""
    seen: dict[Any, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"key {key!r} appears twice in one mapping")
        seen[key] = value
    return seen


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no object construction) that refuses a mapping key written twice (TOML already does)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: list[Any] = []  # a list: YAML keys may be unhashable
        for key_node, _ in node.value:  # as written: a key may override what a `<<` merge brought in
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (again on line {key_node.start_mark.line + 1})")
            seen.append(key)
        return super().construct_mapping(node, deep=deep)  # flattens the merges
