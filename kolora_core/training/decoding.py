"""Training images decoded strictly, a failure named in the pre-check's one line, by both engines.

The train stage's pre-check verifies a PNG's chunks and CRCs only (`kolora_core.data.layout._check_image` says why
decoding there costs too much), so a PNG whose deflate stream is broken, cut, or holds fewer rows than its header
passes it. Its pixels are first decoded here: by the fast engine's cache build once per image, by the seed engine at
each step it draws the image. Both decode with truncated loading off (Data-Juicer, imported in the same process,
turns it on for all: the image would be trained on as black or grey) and count a PNG's rows (Pillow fills the rows a
short stream lacks with black and raises nothing).

A decode runs in a data-loader worker where `train.num_workers` > 0, and the loader re-raises a worker's exception
as its class with the worker's traceback for message: so `Undecodable` carries the image's path in its message, and
`unreadable` reads it back from either form.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

from kolora_core.data.layout import unreadable_image
from kolora_core.data.normalise import Skip, check_png_rows, strict_pillow
from kolora_core.errors import KoloraError

T = TypeVar("T")
_SEP = "\x1f"  # between the path and the decoder's words (neither holds it: trainset names are portable)


class Undecodable(OSError):
    """A training image's pixels cannot be decoded: '<path>\\x1f<error type>: <message>'."""


def decoded(path: Path, load: Callable[[], T], *, rows: bool = True) -> T:
    """`load()`, which decodes `path`, under truncated loading off, then (with `rows`) the PNG's rows counted; any
    decode failure is `Undecodable` naming `path`."""
    try:
        with strict_pillow():
            value = load()
        if rows:
            check_png_rows(path.read_bytes())
        return value
    except Skip as exc:
        raise Undecodable(f"{path}{_SEP}{exc.reason}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:  # Pillow's decode errors
        raise Undecodable(f"{path}{_SEP}{type(exc).__name__}: {exc}") from None


def unreadable(exc: Undecodable) -> KoloraError:
    """The pre-check's line for the image `exc` names, raised in this process or re-raised from a loader worker
    (whose traceback ends '<module>.Undecodable: <path>\\x1f<reason>')."""
    last = str(exc).strip().split("\n")[-1]
    path, reason = last.split(f"{Undecodable.__name__}: ", 1)[-1].split(_SEP, 1)
    return unreadable_image(Path(path), reason)
