"""visapp.formats.images: true format by magic bytes, full decode, stored size, EXIF orientation, truncation."""

from __future__ import annotations

import pytest
from PIL import ImageFile

from factory import MAX_PIXELS, image_bytes, truncated_jpeg
from visapp.formats.image_formats import displayed_size, sniff_format
from visapp.formats.images import ImageError, inspect_image, pillow_displayed

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fmt", ["jpeg", "png", "bmp", "webp"])
def test_each_accepted_format_is_identified_and_sized(fmt):
    info = inspect_image(image_bytes(fmt, (40, 30)), MAX_PIXELS)
    assert (info.format, info.width, info.height, info.orientation) == (fmt, 40, 30, 1)


def test_format_comes_from_the_bytes_not_the_name():
    assert sniff_format(image_bytes("png")[:12]) == "png"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVE") is None  # RIFF, but not WebP
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"BM") == "bmp"


@pytest.mark.parametrize(("fmt", "mode"), [("png", "L"), ("png", "P"), ("png", "RGBA"), ("jpeg", "L"), ("bmp", "P")])
def test_grayscale_palette_and_rgba_images_are_valid(fmt, mode):
    assert inspect_image(image_bytes(fmt, (20, 10), mode=mode), MAX_PIXELS).width == 20


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_valid_exif_orientation_is_reported_and_size_stays_the_stored_one(fmt):
    info = inspect_image(image_bytes(fmt, (40, 30), exif_orientation=6), MAX_PIXELS)
    assert (info.width, info.height, info.orientation) == (40, 30, 6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_figures_pillow_transpose_shows_what_validation_and_opencv_show(orientation):
    """Figures turn Pillow images, validation numpy arrays: both must show one displayed frame per orientation."""
    import numpy as np
    from PIL import Image

    from visapp.formats.images import _orient

    stored = np.arange(5 * 3, dtype=np.uint8).reshape(5, 3)  # no symmetry: every orientation differs
    shown = np.asarray(pillow_displayed(Image.fromarray(stored), orientation))
    assert np.array_equal(shown, _orient(stored, orientation))
    assert shown.shape[::-1] == displayed_size(3, 5, orientation)


@pytest.mark.parametrize("value", [0, 9, 255, 65535])
def test_invalid_exif_orientation_value_reads_as_1(value):
    assert inspect_image(image_bytes("jpeg", exif_orientation=value), MAX_PIXELS).orientation == 1


@pytest.mark.parametrize(
    "blob",
    [b"Exif\x00\x00garbage-garbage-garbage", b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\xff\xff", b"Exif\x00\x00"],
)
def test_broken_exif_is_not_an_error(blob):
    assert inspect_image(image_bytes("jpeg", exif=blob), MAX_PIXELS).orientation == 1


def test_displayed_size_swaps_for_quarter_turns_only():
    assert [displayed_size(40, 30, o) for o in (1, 3, 5, 6, 8)] == [(40, 30), (40, 30), (30, 40), (30, 40), (30, 40)]


def _code(data: bytes) -> str:
    with pytest.raises(ImageError) as caught:
        inspect_image(data, MAX_PIXELS)
    assert caught.value.message, "an ImageError always says what is wrong"
    return caught.value.code


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty file
        b"just some text, not an image",
        b"GIF89a\x01\x00\x01\x00",  # a real format we do not accept
        b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9",  # JPEG magic, garbage body
        b"BM" + b"\x00" * 60,  # BMP magic, invalid header
    ],
    ids=["empty", "text", "gif", "jpeg-garbage", "bmp-garbage"],
)
def test_unreadable_images(data):
    assert _code(data) == "image_unreadable"


def test_png_with_a_corrupted_body_fails_to_decode():
    data = bytearray(image_bytes("png", (64, 64), seed=5))
    data[60:90] = b"\x00" * 30  # inside the IDAT chunk
    assert _code(bytes(data)) == "image_unreadable"


def test_jpeg_without_end_marker_is_truncated():
    assert _code(truncated_jpeg()) == "image_truncated"
    assert _code(image_bytes("jpeg")[:-2]) == "image_truncated"  # only the FFD9 marker missing


@pytest.mark.parametrize("extra", [b"\x00\x00", b"\x00" * 4096, b"ftypmp42" + bytes(range(256)) * 40])
def test_a_complete_jpeg_followed_by_other_bytes_is_accepted_and_they_are_counted(extra):
    """Zero padding, a camera trailer, a phone's "motion photo" video: the image itself is complete."""
    data = image_bytes("jpeg", (64, 48))
    info = inspect_image(data + extra, MAX_PIXELS)
    assert (info.width, info.height, info.trailing_bytes) == (64, 48, len(extra))
    assert inspect_image(data, MAX_PIXELS).trailing_bytes == 0


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_other_formats_followed_by_other_bytes_count_them(fmt):
    assert inspect_image(image_bytes(fmt, (32, 32)) + b"tail", MAX_PIXELS).trailing_bytes == 4


def test_a_jpeg_thumbnail_in_the_exif_does_not_end_the_image_early():
    from PIL import Image

    thumbnail = image_bytes("jpeg", (16, 12))
    exif = Image.Exif()
    exif[0x0112] = 1
    blob = b"Exif\x00\x00" + exif.tobytes()[6:] + thumbnail  # a complete JPEG inside APP1, as cameras write
    data = image_bytes("jpeg", (64, 48), exif=blob)
    assert inspect_image(data, MAX_PIXELS).trailing_bytes == 0
    assert _code(data[:-2]) == "image_truncated"


def test_too_many_pixels_is_refused_from_the_header_alone():
    import zlib

    width = height = 13_000  # 169 megapixels in a few kilobytes
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = b"IDAT" + zlib.compress(b"\x00" * 100)
    chunk = lambda body: len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")  # noqa: E731
    data = b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(idat) + chunk(b"IEND")
    with pytest.raises(ImageError) as caught:
        inspect_image(data, max_pixels=100_000_000)
    assert caught.value.code == "image_too_large"
    assert "13000x13000 = 169,000,000 pixels" in caught.value.message
    assert "data.max_image_pixels" in caught.value.message


@pytest.mark.parametrize("name", ["heic", "avif"])
def test_heic_and_avif_bytes_are_named(name):
    brand = {"heic": b"heic", "avif": b"avif"}[name]
    data = b"\x00\x00\x00\x18ftyp" + brand + b"\x00" * 40
    with pytest.raises(ImageError) as caught:
        inspect_image(data, MAX_PIXELS)
    assert name.upper() in caught.value.message.upper()


def test_a_big_png_is_checked_as_a_stream(monkeypatch):
    """Past the decode limit a PNG is decompressed as a stream: complete ones pass, damaged ones do not."""
    from visapp.formats import images

    monkeypatch.setattr(images, "PNG_DECODE_LIMIT", 0)
    for mode in ("RGB", "L", "P", "RGBA"):
        assert inspect_image(image_bytes("png", (61, 37), mode=mode), MAX_PIXELS).width == 61
    data = bytearray(image_bytes("png", (64, 64), seed=5))
    data[60:90] = b"\x00" * 30  # inside the IDAT chunk
    assert _code(bytes(data)) == "image_unreadable"


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp"])
def test_other_formats_cut_short_are_truncated(fmt):
    data = image_bytes(fmt, (64, 64), seed=9)
    assert _code(data[: len(data) // 2]) == "image_truncated"


def test_png_without_iend_chunk_is_truncated():
    # libpng (OpenCV, so Ultralytics' loader) refuses it, although Pillow would decode the pixels.
    assert _code(image_bytes("png")[:-12]) == "image_truncated"


def test_truncation_is_caught_even_when_pillow_is_told_to_load_truncated_images(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = image_bytes("bmp", (64, 64))
    assert _code(data[:-100]) == "image_truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the caller's setting is restored"


def test_error_messages_hold_no_memory_addresses():
    with pytest.raises(ImageError) as caught:
        inspect_image(b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9", MAX_PIXELS)
    assert "0x" not in caught.value.message


def _png_chunks_of(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("where", ["before", "after"])
def test_png_exif_is_read_wherever_it_is_without_decoding_the_pixels(where, monkeypatch):
    """Pillow's getexif() of a PNG decodes the whole image to find an eXIf chunk after IDAT; ours never does."""
    from PIL import PngImagePlugin

    data = image_bytes("png", (64, 48), exif_orientation=6)
    if where == "after":  # move eXIf behind the image data, where the PNG specification also allows it
        chunks = _png_chunks_of(data)
        exif = next(c for c in chunks if c[4:8] == b"eXIf")
        rest = [c for c in chunks if c is not exif]
        data = data[:8] + b"".join(rest[:-1]) + exif + rest[-1]
    decoded = []
    load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(self.size) or load(self))
    from visapp.formats import images

    monkeypatch.setattr(images, "_decode", lambda *args: None)  # the header alone
    assert inspect_image(data, MAX_PIXELS).orientation == 6
    assert set(decoded) <= {(1, 1)}


def test_a_png_that_inflates_to_half_a_gigabyte_is_streamed_in_bounded_pieces():
    """13,000 x 13,000 RGB in ~0.5 MB: inflated a megabyte at a time (tracemalloc sees zlib's output)."""
    import tracemalloc

    from benchmarks.huge_images import huge_png

    data = huge_png(13_000, 13_000)
    tracemalloc.start()
    try:
        info = inspect_image(data, max_pixels=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.width, info.height) == (13_000, 13_000)
    assert peak < 20_000_000
