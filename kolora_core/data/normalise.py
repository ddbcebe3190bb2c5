"""Open, verify and normalise one image: bytes in, lossless RGB PNG bytes out, or a `Skip` that says why not.

Every image the filter (and Data-Juicer) later sees went through `normalise`: the file was identified,
structurally verified, fully decoded with truncated-image loading OFF (Data-Juicer turns it on globally
when imported), EXIF-rotated, converted to RGB and re-encoded once as PNG. The checks, in order:

* empty_file    -- zero bytes
* too_large     -- the file is over MAX_FILE_BYTES, or the pixel count is over MAX_PIXELS (decompression bombs:
                   Pillow's DecompressionBombError/Warning are caught, never allowed to allocate)
* not_an_image  -- Pillow cannot identify it (text or HTML saved as .png, ...)
* truncated     -- the data ends early (also a PNG whose complete deflate stream holds fewer rows than its header
                   says: Pillow decodes that without an error, the missing rows black; `check_png_rows`)
* corrupt       -- anything else the decoder rejects
* degenerate    -- a side under MIN_SIDE pixels (1xN strips, 1x1 tracking pixels)

Colour: CMYK and RGB with an ICC profile are converted to sRGB (naive conversion where the profile is
unusable); P/LA/RGBA/PA and transparent images are composited onto white (the seed's plain `.convert("RGB")`
turns transparent pixels into whatever colour they hide, often black); 16-bit and float greyscale are
scaled to 8 bits rather than clipped.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_SQUARE = 8192  # the side of the largest square image read
MAX_PIXELS = MAX_SQUARE * MAX_SQUARE  # 67 MP: above any training resolution; a 30000x30000 PNG bomb is 900 MP
MAX_FILE_BYTES = 256 * 1024 * 1024
MIN_SIDE = 8
BACKGROUND = (255, 255, 255)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Skip(Exception):
    """An input that cannot become a training image; `kind` is a stable code, `reason` says it to a person."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Normalised:
    png: bytes
    sha256: str  # of `png`
    width: int
    height: int
    source_sha256: str  # of the input bytes
    source_format: str  # PNG, JPEG, ... as Pillow identified it
    source_mode: str


@contextmanager
def strict_pillow():
    """Decode with truncated loading off and bombs as errors, whatever another library set globally."""
    saved = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Skip("not_an_image", f"not an image Pillow can identify (starts with {data[:8]!r})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Skip("too_large", f"decompression bomb: {exc}") from None


def _identify(data: bytes) -> Image.Image:
    """The header only, opened with Pillow's own bomb check off (nothing is decoded yet), so that `_check_size` refuses
    a large image in the words of our limit: Pillow's names twice that limit above 134 MP, and calls it a DOS attack."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return _open(data)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_size(im: Image.Image) -> None:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise Skip(
            "too_large",
            f"{width}x{height} = {width * height / 1e6:.0f} MP is over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it "
            f"({MAX_SQUARE}x{MAX_SQUARE} at most)",
        )
    if min(width, height) < MIN_SIDE:
        raise Skip("degenerate", f"{width}x{height} has a side under {MIN_SIDE} px")


def decode(data: bytes) -> Image.Image:
    """Identify, verify and fully decode (call it under `strict_pillow`); every failure becomes a Skip. Ingest decodes
    every input here, and the filter every image before Data-Juicer sees it."""
    im = _identify(data)
    _check_size(im)
    try:
        im.verify()  # structure and checksums (PNG CRCs); invalidates `im`
        im = _open(data)
        im.seek(0)  # first frame of animations
        im.load()
        check_png_rows(data)
    except Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Skip("too_large", f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc) or type(exc).__name__
        kind = "truncated" if "truncat" in message.lower() or isinstance(exc, EOFError) else "corrupt"
        raise Skip(kind, f"cannot decode: {message}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything (struct.error, IndexError, ...) on bad data
        raise Skip("corrupt", f"cannot decode: {type(exc).__name__}: {exc}") from None
    return im


_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # x0 y0 dx dy


def check_png_rows(data: bytes) -> None:
    """A PNG (already verified) whose deflate stream ends before the last row is truncated; other formats pass.
    Pillow 13 fills the rows it lacks with zeros and raises nothing (its zip decoder takes the stream's end for the
    image's), so a half-black image would be trained on; libpng refuses it ("Not enough image data"). Inflates the
    IDAT data again, no further than the IHDR asks for (a filter byte and the packed samples per row, per Adam7 pass
    if interlaced): ~10 ms per 1024x1024 PNG on a 2-core CPU."""
    if not data.startswith(PNG_SIGNATURE):
        return
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])  # IHDR comes first
    bits = depth * _SAMPLES[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    need = 0
    for x0, y0, dx, dy in passes:
        cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        need += rows * (1 + (cols * bits + 7) // 8) if cols > 0 and rows > 0 else 0
    inflater, got, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and got < need:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            got += len(inflater.decompress(inflater.unconsumed_tail + data[pos + 8 : pos + 8 + length], need - got))
        pos += 12 + length
    if got < need:
        raise Skip(
            "truncated", f"cannot decode: the image data ends after {got} of the {need} bytes its {width}x{height} header needs"
        )


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # noqa: BLE001 - a broken profile falls back to the naive conversion below
        return im


def _scale_to_8bit(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if im.mode == "F":
        hi = float(arr.max()) if arr.size else 1.0
        scaled = arr * (255.0 if hi <= 1.0 else 255.0 / hi)
    else:
        hi = int(arr.max()) if arr.size else 0
        scaled = arr * (255.0 / 65535.0) if im.mode.startswith("I;16") or hi > 255 else arr
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, transparent areas onto white."""
    im = _to_srgb(im)
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _scale_to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im.convert("RGB")


def encode_png(im: Image.Image) -> bytes:
    """Deterministic lossless PNG: no metadata chunks, fixed compression level."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def normalise(data: bytes) -> Normalised:
    """Bytes of any image file -> normalised PNG; raises Skip with the reason it is unusable."""
    if not data:
        raise Skip("empty_file", "empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise Skip("too_large", f"{len(data) / 2**20:.0f} MiB file is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
    with strict_pillow():
        im = decode(data)
        source_format, source_mode = im.format or "?", im.mode
        with suppress(Exception):  # unreadable EXIF: keep the stored orientation
            im = ImageOps.exif_transpose(im) or im
        rgb = to_rgb(im)
    _check_size(rgb)
    png = encode_png(rgb)
    return Normalised(
        png=png,
        sha256=hashlib.sha256(png).hexdigest(),
        width=rgb.width,
        height=rgb.height,
        source_sha256=hashlib.sha256(data).hexdigest(),
        source_format=source_format,
        source_mode=source_mode,
    )
