"""Reading the user's text files (config, prompts): every way one can be unreadable is one line naming it.

A config or prompts file is hand-written, often on another system: saved as Latin-1 or GBK, with a BOM,
or the path is a directory. Each is a user error (exit 2, never retried), so it must not surface as a
UnicodeDecodeError or IsADirectoryError traceback (exit 1, which Argo retries pointlessly).
"""

from __future__ import annotations

from pathlib import Path

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
