"""Image bytes -> `ImageInfo` (true format, stored size, EXIF orientation, trailing bytes), or an `ImageError`.

The format comes from the magic bytes, never the file name (`visapp.formats.image_formats`). Each
image is checked the way training will read it, and no more than once:

1. its container is walked (JPEG markers up to the main image's end marker, PNG chunks and their checksums up
   to IEND, the RIFF size of WebP, the file size a BMP declares): a file that ends before its image does is
   `image_truncated`; bytes after a complete image (padding, camera or "motion photo" trailers) are counted
   and reported as a warning, `image_trailing_data` (Ultralytics would rewrite such a JPEG in place, so
   training reads a copy of it);
2. its header gives the size and the EXIF orientation; more pixels than the limit is `image_too_large`,
   before anything is decoded;
3. it is decoded by OpenCV, the library training reads with, at the smallest size that still reads all its
   data (a JPEG at 1/8 scale: the decoder still goes through every entropy-coded block), in grey. A PNG too
   big to decode in bounded memory is decompressed as a stream instead, every row's filter byte checked,
   without keeping the pixels. Where the file carries EXIF, a second decode without the orientation proves
   that OpenCV turns the image the way its EXIF orientation says (the labels are written in that frame).
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visapp.errors import DataError
from visapp.formats.image_formats import PNG_SIGNATURE, displayed_size, sniff_format

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Above this many pixels a PNG is checked as a stream rather than decoded (1 byte a pixel in grey).
PNG_DECODE_LIMIT = 40_000_000
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type
_INFLATE_STEP = 1 << 20  # bytes of IDAT fed, and of image data taken, at a time by the stream check
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}
_ORIENTATION_TAG = 0x0112
# A marker in JPEG entropy-coded data: 0xFF followed by neither a stuffed 0x00, a restart marker, nor a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_EXIF_MARK = re.compile(rb"exif", re.IGNORECASE)  # JPEG APP1 "Exif", PNG "eXIf", WebP "EXIF"
# Formats a person may reasonably hand us that we do not accept: named in the message.
_OTHER_MAGIC = {
    b"GIF8": "a GIF file",
    b"II*\x00": "a TIFF file",
    b"MM\x00*": "a TIFF file",
    b"%PDF": "a PDF document",
    b"8BPS": "a Photoshop (PSD) file",
    b"<?xm": "an XML file",
    b"<ann": "an XML file",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


class ImageError(DataError):
    """An image that cannot be used: `code` is `image_unreadable`, `image_truncated` or `image_too_large`."""


@dataclass(frozen=True)
class ImageInfo:
    """What validation needs to know about an image. width/height are the stored pixels, before EXIF."""

    format: str  # "jpeg" | "png" | "bmp" | "webp"
    width: int
    height: int
    orientation: int  # valid EXIF orientation 1..8; 1 when absent or invalid
    trailing_bytes: int = 0  # bytes after the end of a complete image
    # The grey pixels of the check's decode, in the displayed frame (a JPEG at 1/8 scale), when asked for with
    # `keep_pixels`; None otherwise, and for a PNG too large to decode (checked as a stream).
    pixels: Any = field(default=None, compare=False, repr=False)


def _describe_unknown(data: bytes) -> str:
    accepted = "JPEG, PNG, BMP or WebP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return f"a HEIC/HEIF image (as iPhones save photos), not a {accepted} image: export it as JPEG"
        if brand in _AVIF_BRANDS:
            return f"an AVIF image, not a {accepted} image: convert it to JPEG or PNG"
        return f"a video or ISO media file ({brand.decode('latin-1')!r}), not a {accepted} image"
    for magic, name in _OTHER_MAGIC.items():
        if data.startswith(magic):
            return f"{name}, not a {accepted} image: convert it to JPEG or PNG"
    return f"not a {accepted} image (starts with {data[:8].hex(' ')})"


def _exc_text(exc: Exception) -> str:
    """The exception's message without object addresses (`<_io.BytesIO object at 0x7f..>`): reports are stable."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__


# ---------------------------------------------------------------- containers: where the image ends


def _truncated(what: str) -> ImageError:
    return ImageError("image_truncated", f"{what}: the file is cut short; re-export or re-download it")


def _jpeg_end(data: bytes) -> int:
    """The offset just after the main image's end marker (FFD9); embedded thumbnails are skipped with their segment."""
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise ImageError("image_unreadable", f"JPEG structure is broken at byte {pos}: re-export it")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= size:
            break
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            pos += 2
            continue
        if pos + 4 > size:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows, up to the next real marker
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    raise _truncated("JPEG ends before its end marker (FFD9)")


def _metadata_end(data: bytes, fmt: str) -> int:
    """Where a JPEG's main image data starts (its first start-of-scan): OpenCV reads EXIF from the segments
    before it, so the search for an EXIF mark stops there instead of scanning the compressed data (a
    case-insensitive scan of a whole file costs more than decoding it at 1/8 scale). Other formats: the end."""
    if fmt != "jpeg":
        return len(data)
    pos, size = 2, len(data)
    while pos + 4 <= size and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:
            return pos
        if marker == 0xFF:  # a fill byte
            pos += 1
        elif 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return size  # an odd structure: search it all


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start of data, end of data) of every chunk up to IEND; `ImageError` for a cut or damaged one."""
    pos, size = len(PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > size:
            raise _truncated("PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length
        if end + 4 > size:
            raise _truncated(f"PNG chunk {kind.decode('latin-1')!r} runs past the end of the file")
        critical = kind[:1].isupper()
        if critical and zlib.crc32(data[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            raise ImageError(
                "image_unreadable",
                f"PNG chunk {kind.decode('latin-1')!r} fails its checksum (a damaged file): re-export or re-download",
            )
        yield kind, pos + 8, end
        pos = end + 4
        if kind == b"IEND":
            return


def _png_end(data: bytes) -> int:
    end = 0
    for kind, _start, stop in _png_chunks(data):
        if kind == b"IEND":
            end = stop + 4
    return end


def _riff_end(data: bytes) -> int:
    end = 8 + int.from_bytes(data[4:8], "little")
    if len(data) < end:
        raise _truncated(f"WebP holds {len(data)} bytes but its RIFF header announces {end}")
    return end


def _bmp_end(data: bytes) -> int:
    declared = int.from_bytes(data[2:6], "little") if len(data) >= 6 else 0
    if declared < 26:  # 0 or nonsense: writers may leave it unset; OpenCV's decode judges the file
        return len(data)
    if len(data) < declared:
        raise _truncated(f"BMP holds {len(data)} bytes but its header announces {declared}")
    return declared


_CONTAINER_END = {"jpeg": _jpeg_end, "png": _png_end, "webp": _riff_end, "bmp": _bmp_end}


# ---------------------------------------------------------------- header: size, orientation


@contextlib.contextmanager
def pillow_unchecked() -> Iterator[None]:
    """Pillow without its decompression-bomb check, which is ours to make (by pixel count, with a code: validate
    refuses an image above data.max_image_pixels from its header), and without warnings."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF and the like: the outcome counts, not the noise
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def exif_orientation(image: PILImage) -> int:
    """An opened Pillow image's EXIF orientation 1..8, or 1 for a missing, invalid or unparsable tag (valid
    input, not an issue)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # broken EXIF comes in endless shapes (struct, value, key, syntax errors)
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_stand_in(data: bytes) -> bytes:
    """The PNG's chunks around a 1x1 image of its colour type: what Pillow needs to read its EXIF.

    A PNG's `getexif()` in Pillow decodes the whole image when the EXIF is not before the image data (an eXIf
    chunk may follow IDAT): 507 MB for a 13,000 x 13,000 RGB PNG of a few kilobytes. The stand-in keeps every
    chunk but the pixels (and APNG's frame chunks, which would not fit a 1x1 image), so Pillow reads the same
    EXIF, wherever it is, by decoding one pixel.
    """
    parts = [PNG_SIGNATURE]
    for kind, start, stop in _png_chunks(data):
        if kind == b"IHDR":
            _width, _height, depth, colour, compression, filtering, _interlace = struct.unpack(
                ">IIBBBBB", data[start:stop]
            )
            parts.append(_png_chunk(kind, struct.pack(">IIBBBBB", 1, 1, depth, colour, compression, filtering, 0)))
            row = 1 + (_PNG_CHANNELS.get(colour, 4) * depth + 7) // 8
            parts.append(_png_chunk(b"IDAT", zlib.compress(bytes(row))))
        elif kind not in (b"IDAT", b"acTL", b"fcTL", b"fdAT"):
            parts.append(data[start - 8 : stop + 4])
    return b"".join(parts)


def _header(data: bytes, fmt: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header, without decoding the pixels."""
    from PIL import Image

    with pillow_unchecked():
        try:
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as image:
                width, height = image.size
                if fmt != "png":
                    orientation = exif_orientation(image)
        except Exception as exc:  # Pillow raises many types for a broken header
            raise ImageError("image_unreadable", f"{fmt.upper()} header cannot be read ({_exc_text(exc)})") from None
        if fmt == "png":
            try:
                with Image.open(io.BytesIO(_png_stand_in(data)), formats=["PNG"]) as stand_in:
                    orientation = exif_orientation(stand_in)
            except Exception:  # a chunk Pillow cannot read: no usable EXIF, as for a broken tag
                orientation = 1
    if width <= 0 or height <= 0:
        raise ImageError("image_unreadable", f"{fmt.upper()} has no pixels ({width}x{height})")
    return width, height, orientation


# ---------------------------------------------------------------- decoding, as training does


def _orient(pixels: Any, orientation: int) -> Any:
    """Stored pixels (rows, columns, ...) -> as shown for an EXIF orientation (as OpenCV and Pillow show them)."""
    import numpy as np

    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return np.rot90(pixels, -1)[::-1]
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


# EXIF orientation -> the Pillow transpose that shows the stored pixels as displayed (`ImageOps.exif_transpose`'s).
_PILLOW_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
_PILLOW_TRANSPOSE |= {7: "TRANSVERSE", 8: "ROTATE_90"}


def pillow_displayed(image: PILImage, orientation: int) -> PILImage:
    """A Pillow image of stored pixels -> as shown for an EXIF orientation (the frame `_orient` gives)."""
    from PIL import Image

    if orientation not in _PILLOW_TRANSPOSE:
        return image
    return image.transpose(Image.Transpose[_PILLOW_TRANSPOSE[orientation]])


def _decode(data: bytes, fmt: str, width: int, height: int, orientation: int) -> Any:
    """Decode with OpenCV as training will (grey, and for a JPEG at 1/8 scale); check the EXIF frame it shows.
    Returns the decoded grey pixels, in the displayed frame."""
    import cv2
    import numpy as np

    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 if fmt == "jpeg" else cv2.IMREAD_GRAYSCALE
    buffer = np.frombuffer(data, np.uint8)
    shown = cv2.imdecode(buffer, flags)
    name = fmt.upper()
    if shown is None:
        raise ImageError(
            "image_unreadable", f"{name} fails to decode with OpenCV, which training reads images with: re-export it"
        )
    if _EXIF_MARK.search(data, 0, _metadata_end(data, fmt)) is None:
        return shown  # no EXIF that OpenCV could apply
    stored = cv2.imdecode(buffer, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    same = stored is not None and np.array_equal(_orient(stored, orientation), shown)
    if same and shown.shape[0] == shown.shape[1] and width != height:
        # A reduced decode can be square, and its few pixels look the same turned, where the image is not square:
        # its full-size frame tells whether OpenCV turned it (one more decode, for such images only).
        full = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
        same = full is not None and full.shape[::-1] == displayed_size(width, height, orientation)
    if not same:
        raise ImageError(
            "image_unreadable",
            f"{name} EXIF orientation reads as {orientation}, but OpenCV, which training reads images with, shows the "
            f"{width}x{height} image otherwise: re-export it with one valid EXIF orientation, or none",
        )
    return shown


def _png_stream_check(data: bytes) -> None:
    """Decompress a PNG's image data as a stream, checking its length and every row's filter byte, keeping nothing.

    The output is taken a bounded piece at a time (a few kilobytes of IDAT may inflate to gigabytes), and the
    filter bytes of a piece are read at their row stride: time grows with the pixels, memory does not.
    """
    header, chunks = None, []
    for kind, start, stop in _png_chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[start:stop])
        elif kind == b"IDAT":
            chunks.append((start, stop))
    if header is None:
        raise ImageError("image_unreadable", "PNG has no IHDR chunk: re-export it")
    width, height, depth, colour, _compression, _filter, interlace = header
    channels = _PNG_CHANNELS.get(colour)
    if channels is None:
        raise ImageError("image_unreadable", f"PNG colour type {colour} is not valid: re-export it")
    bits = depth * channels
    passes = (
        [(width, height)]
        if not interlace
        else [
            ((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
            for x0, y0, dx, dy in (
                (0, 0, 8, 8),
                (4, 0, 8, 8),
                (0, 4, 4, 8),
                (2, 0, 4, 4),
                (0, 2, 2, 4),
                (1, 0, 2, 2),
                (0, 1, 1, 2),
            )
        ]
    )
    # (offset in the inflated stream, row length with its filter byte, rows, rows before) of each pass
    layout, offset, rows = [], 0, 0
    for w, h in passes:
        if w and h:
            length = 1 + (w * bits + 7) // 8
            layout.append((offset, length, h, rows))
            offset, rows = offset + length * h, rows + h
    expected, inflated = offset, 0

    def check(out: bytes, base: int) -> None:
        end = base + len(out)
        for first, length, count, before in layout:
            last = first + length * count
            if last <= base or first >= end:
                continue
            index = max(0, -((first - base) // length))  # the first row of the pass starting at or after base
            filters = out[first + index * length - base : min(end, last) - base : length]
            if filters and max(filters) > 4:
                row = before + index + next(i for i, value in enumerate(filters) if value > 4)
                raise ImageError("image_unreadable", f"PNG row {row} has an invalid filter: re-export it")

    inflater = zlib.decompressobj()
    try:
        for start, stop in chunks:
            for piece in range(start, stop, _INFLATE_STEP):
                pending = data[piece : min(stop, piece + _INFLATE_STEP)]
                while True:
                    out = inflater.decompress(pending, _INFLATE_STEP)
                    if inflated + len(out) > expected:
                        raise ImageError("image_unreadable", "PNG holds more image data than its size: re-export it")
                    check(out, inflated)
                    inflated += len(out)
                    pending = inflater.unconsumed_tail
                    if len(out) < _INFLATE_STEP and not pending:
                        break  # all input used and no output held back
    except zlib.error as exc:
        raise ImageError("image_unreadable", f"PNG image data is damaged ({exc}): re-export it") from None
    if inflated < expected or not inflater.eof:
        first, length, _count, before = next(part for part in reversed(layout) if inflated >= part[0])
        raise _truncated(
            f"PNG image data stops after {min(before + (inflated - first) // length, rows)} of {rows} rows"
        )


def inspect_image(data: bytes, max_pixels: int | None, keep_pixels: bool = False) -> ImageInfo:
    """Check one image the way training will read it (see the module docstring).

    Args:
        data: the whole file's bytes.
        max_pixels: more pixels than this is `image_too_large`: validation passes `data.max_image_pixels`,
            whose one default is in conf/data/ (None: no limit).
        keep_pixels: return the grey pixels the check decoded (`ImageInfo.pixels`), so that measurements of
            the image need no second decode.

    Returns:
        The true format, the stored size (before EXIF rotation), the EXIF orientation, the trailing bytes.

    Raises:
        ImageError: `image_unreadable` (empty, not an image, damaged), `image_truncated` (ends before its image
            does) or `image_too_large`.
    """
    if not data:
        raise ImageError("image_unreadable", "empty file (0 bytes): replace it with the real image or remove it")
    fmt = sniff_format(data[:12])
    if fmt is None:
        raise ImageError("image_unreadable", _describe_unknown(data))
    end = _CONTAINER_END[fmt](data)
    width, height, orientation = _header(data, fmt)
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"{fmt.upper()} of {width}x{height} = {width * height:,} pixels, more than data.max_image_pixels "
            f"({max_pixels:,}): downscale it, or raise data.max_image_pixels in conf/data/ if it is genuine",
        )
    pixels = None
    if fmt == "png" and width * height > PNG_DECODE_LIMIT:
        _png_stream_check(data)
    else:
        pixels = _decode(data, fmt, width, height, orientation)
    return ImageInfo(fmt, width, height, orientation, len(data) - end, pixels if keep_pixels else None)
