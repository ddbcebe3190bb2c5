"""Generated inputs for the data-stage tests: every bad kind the ingest stage must skip, with the reason expected."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kolora_core.config import load_config
from kolora_core.data.normalise import PNG_SIGNATURE


def picture(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A small distinct picture (not flat: lossy codecs and dedup see real content)."""
    im = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31 + 80) % 256))
    draw = ImageDraw.Draw(im)
    w, h = size
    draw.ellipse((w // 5, h // 5, w - w // 5, h - h // 5), fill=(255 - (seed * 40) % 256, 200, (seed * 70) % 256))
    draw.line((0, 0, w, h), fill=(0, 0, 0), width=3)
    return im.convert(mode) if mode != "RGB" else im


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and a valid CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (a decompression bomb) with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# ways to damage a PNG's pixel data with every chunk's CRC valid, so that Pillow's verify() passes it:
# the deflate bytes after the 2-byte zlib header inverted, the zlib stream cut in half (IDAT's length fitting it),
# a complete zlib stream of only half the rows
PIXEL_DAMAGE = ("bad deflate", "cut stream", "few rows")


def damage_pixels(png: bytes, damage: str) -> bytes:
    """`png` (one written by Pillow) with one IDAT holding the `damage` (one of PIXEL_DAMAGE), every CRC recomputed."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    stream = b"".join(data for kind, data in chunks if kind == b"IDAT")
    if damage == "bad deflate":
        stream = stream[:2] + bytes(b ^ 0xFF for b in stream[2:])
    elif damage == "cut stream":
        stream = stream[: len(stream) // 2]
    else:
        assert damage == "few rows", damage
        raw = zlib.decompress(stream)
        stream = zlib.compress(raw[: len(raw) // 2])
    head = b"".join(chunk(kind, data) for kind, data in chunks if kind not in (b"IDAT", b"IEND"))
    return PNG_SIGNATURE + head + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def corrupt_png(im: Image.Image) -> bytes:
    data = bytearray(encode(im, "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 20, idat + 40):
        data[i] ^= 0xFF
    return bytes(data)


def rotated_jpeg() -> bytes:
    """200x120 stored, EXIF orientation 6 (rotate 90 CW on display) -> 120x200."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture((200, 120), 7), "JPEG", quality=95, exif=exif)


def transparent_palette() -> Image.Image:
    im = Image.new("P", (100, 100), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    ImageDraw.Draw(im).rectangle((20, 20, 80, 80), fill=1)
    im.info["transparency"] = 0
    return im


# name -> (expected ingest outcome: "kept" or the skip kind, caption source)
BAD_FOLDER = {
    "good_a.png": "kept",
    "good_b.jpg": "kept",
    "sub/good_c.png": "kept",
    "rotated.jpg": "kept",
    "cmyk.jpg": "kept",
    "palette.gif": "kept",
    "gray16.png": "kept",
    "la.png": "kept",
    "small.png": "kept",  # ingest keeps it; the filter's image_shape_filter drops it
    "wide.png": "kept",  # ... and image_aspect_ratio_filter drops this one
    "good_a_copy.png": "duplicate",
    "empty.png": "empty_file",
    "text.png": "not_an_image",
    "truncated.jpg": "truncated",
    "corrupt.png": "corrupt",
    "bomb.png": "too_large",
    "strip.png": "degenerate",
    "nocaption.png": "missing_caption",
    "gbk.png": "missing_caption",  # its sidecar gbk.txt is not UTF-8
    "ghost.png": "missing_file",  # listed in metadata.csv, no such file
}
IN_METADATA = [n for n in BAD_FOLDER if n not in ("sub/good_c.png", "nocaption.png", "gbk.png")]


def build_bad_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    a = picture((128, 128), 1)
    rgba = picture((120, 100), 3, "RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((120, 100)))
    gray16 = Image.fromarray((np.arange(100 * 100, dtype=np.uint16).reshape(100, 100) * 6).astype(np.uint16))
    truncated = encode(picture((160, 160), 9), "JPEG", quality=90)
    files = {
        "good_a.png": encode(a, "PNG"),
        "good_b.jpg": encode(picture((160, 120), 2), "JPEG", quality=90),
        "sub/good_c.png": encode(rgba, "PNG"),
        "rotated.jpg": rotated_jpeg(),
        "cmyk.jpg": encode(picture((110, 110), 4, "CMYK"), "JPEG", quality=90),
        "palette.gif": encode(transparent_palette(), "GIF", transparency=0),
        "gray16.png": encode(gray16, "PNG"),
        "la.png": encode(picture((100, 100), 5, "LA"), "PNG"),
        "small.png": encode(picture((64, 64), 6), "PNG"),
        "wide.png": encode(picture((300, 100), 8), "PNG"),
        "good_a_copy.png": encode(a, "PNG", compress_level=1),  # other bytes, same pixels
        "empty.png": b"",
        "text.png": b"<html>not an image</html>\n",
        "truncated.jpg": truncated[: len(truncated) // 2],
        "corrupt.png": corrupt_png(picture((120, 120), 10)),
        "bomb.png": png_header_only(30000, 30000),
        "strip.png": encode(picture((1, 300), 11), "PNG"),
        "nocaption.png": encode(picture((100, 100), 12), "PNG"),
        "gbk.png": encode(picture((100, 100), 13), "PNG"),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "sub" / "good_c.txt").write_text("a sidecar caption\n", encoding="utf-8")
    (root / "gbk.txt").write_bytes("二次元 少女".encode("gbk"))
    rows = ["file_name,text"] + [f'{name},"caption of {name}, 二次元"' for name in IN_METADATA]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bad_folder(tmp_path_factory.mktemp("bad-folder"))


def ingest_config(source: str, **fields):
    config = load_config("smoke").ingest
    return config.model_copy(update={"source": source, **fields})
