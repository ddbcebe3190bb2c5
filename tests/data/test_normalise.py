"""normalise(): every bad kind is a Skip with its reason; every good mode becomes a deterministic RGB PNG."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from kolora_core.data.normalise import MAX_PIXELS, Skip, normalise
from tests.data.conftest import (
    BAD_FOLDER,
    PNG_SIGNATURE,
    build_bad_folder,
    chunk,
    damage_pixels,
    encode,
    picture,
    png_header_only,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = build_bad_folder(tmp_path_factory.mktemp("normalise"))
    return {name: (root / name).read_bytes() for name in BAD_FOLDER if (root / name).exists()}


IMAGE_SKIPS = {
    n: k for n, k in BAD_FOLDER.items() if k in ("empty_file", "not_an_image", "truncated", "corrupt", "too_large", "degenerate")
}


@pytest.mark.parametrize("name", sorted(IMAGE_SKIPS))
def test_bad_files_are_skipped_with_their_kind(files: dict[str, bytes], name: str) -> None:
    with pytest.raises(Skip) as caught:
        normalise(files[name])
    assert caught.value.kind == IMAGE_SKIPS[name]
    assert caught.value.reason


def test_truncated_is_caught_even_when_data_juicer_turned_truncated_loading_on(
    files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what `import data_juicer` does
    with pytest.raises(Skip, match="truncated"):
        normalise(files["truncated.jpg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


@pytest.mark.parametrize(
    ("damage", "kind", "reason"),
    [
        ("bad deflate", "corrupt", "broken data stream"),
        ("cut stream", "truncated", "image file is truncated"),
        # was kept: Pillow decodes it without an error, the bottom half black, and ingest wrote that as a good PNG
        ("few rows", "truncated", "the image data ends after 16184 of the 32368 bytes its 96x112 header needs"),
    ],
)
@pytest.mark.parametrize("truncated_loading", [False, True])
def test_a_png_with_valid_crcs_but_damaged_pixel_data_is_skipped(
    monkeypatch: pytest.MonkeyPatch, damage: str, kind: str, reason: str, truncated_loading: bool
) -> None:
    """verify() passes all three (the CRCs fit); ingest_report.json lists each under its kind."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", truncated_loading)  # True: what `import data_juicer` does
    png = damage_pixels(encode(picture((96, 112), 3), "PNG"), damage)
    with Image.open(io.BytesIO(png)) as im:
        im.verify()
    with pytest.raises(Skip) as caught:
        normalise(png)
    assert (caught.value.kind, reason in caught.value.reason) == (kind, True), caught.value.reason


@pytest.mark.parametrize("interlace", [False, True])
def test_a_whole_png_is_kept_plain_or_interlaced(interlace: bool) -> None:
    """The rows check counts Adam7's passes: a complete interlaced PNG (Pillow does not write one) is not refused."""
    pixels = np.asarray(picture((13, 11), 4))  # odd sizes: passes of uneven width, Adam7's second one empty
    rows = []
    adam7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    for x0, y0, dx, dy in adam7 if interlace else ((0, 0, 1, 1),):  # x0 y0 dx dy of each pass
        part = pixels[y0::dy, x0::dx]
        rows += [b"\x00" + row.tobytes() for row in part if part.shape[1]]  # filter type 0 (none) per row
    ihdr = struct.pack(">IIBBBBB", 13, 11, 8, 2, 0, 0, int(interlace))
    png = PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(normalise(png).png))), pixels)


def test_bomb_limit_is_restored_and_bombs_never_allocate(files: dict[str, bytes]) -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(Skip, match=r"decompression bomb|MP limit"):
        normalise(files["bomb.png"])
    assert before == Image.MAX_IMAGE_PIXELS
    assert MAX_PIXELS < 30000 * 30000


@pytest.mark.parametrize("size", [(12000, 12000), (9000, 8000)])
def test_a_large_image_is_refused_in_the_words_of_the_limit(size: tuple[int, int]) -> None:
    """Pillow's message was the one shown: 'exceeds limit of 134217728 pixels, could be decompression bomb DOS
    attack' for a 144 MP photo (twice the 67 MP limit above which a 72 MP one is refused) and no word what to do."""
    with pytest.raises(Skip) as caught:
        normalise(png_header_only(*size))
    megapixels = size[0] * size[1] / 1e6
    assert caught.value.reason == (
        f"{size[0]}x{size[1]} = {megapixels:.0f} MP is over the 67 MP limit: downscale it (8192x8192 at most)"
    )


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(normalise(data).png))
    assert im.format == "PNG" and im.mode == "RGB"
    return im


def test_exif_orientation_is_applied(files: dict[str, bytes]) -> None:
    assert decoded(files["rotated.jpg"]).size == (120, 200)


def test_transparency_goes_onto_white(files: dict[str, bytes]) -> None:
    palette = decoded(files["palette.gif"])
    assert palette.getpixel((2, 2)) == (255, 255, 255)  # transparent index
    assert palette.getpixel((50, 50)) == (255, 0, 0)
    rgba = Image.new("RGBA", (20, 20), (10, 20, 30, 0))
    assert decoded(encode(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_not_clipped(files: dict[str, bytes]) -> None:
    grey = np.asarray(decoded(files["gray16.png"]))[..., 0]
    assert grey.max() == round(59994 * 255 / 65535)  # the brightest 16-bit value, scaled
    assert len(np.unique(grey)) > 100  # clipping to 255 would leave a few values


@pytest.mark.parametrize("name", ["cmyk.jpg", "la.png", "good_b.jpg", "sub/good_c.png"])
def test_other_modes_become_rgb(files: dict[str, bytes], name: str) -> None:
    assert decoded(files[name]).mode == "RGB"


def test_output_is_deterministic_and_pixel_identity_dedups(files: dict[str, bytes]) -> None:
    first, again = normalise(files["good_a.png"]), normalise(files["good_a.png"])
    assert first.png == again.png and first.sha256 == again.sha256
    other_bytes_same_pixels = normalise(files["good_a_copy.png"])
    assert files["good_a.png"] != files["good_a_copy.png"]
    assert other_bytes_same_pixels.sha256 == first.sha256
    assert other_bytes_same_pixels.source_sha256 != first.source_sha256


def test_a_jpeg_is_not_re_encoded_lossily() -> None:
    im = picture((64, 64), 3)
    jpeg = encode(im, "JPEG", quality=90)
    assert np.array_equal(np.asarray(decoded(jpeg)), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
