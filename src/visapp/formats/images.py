"""Image bytes -> `ImageInfo` (true format, stored size, EXIF orientation), or an `ImageError` saying why not.

The format comes from the magic bytes, never the file name (real datasets hold PNG files named `.jpg`).
Every image is decoded in full, so that a file Ultralytics (or OpenCV) would choke on is rejected here first:
by Pillow, then by OpenCV, which Ultralytics trains with (it is stricter than Pillow about some broken PNGs,
and where the two read the EXIF orientation differently the labels would land in the wrong frame).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

from visapp.errors import DataError

FORMATS = ("jpeg", "png", "bmp", "webp")  # the image formats we accept, by their bytes
# Extensions taken as images without looking inside. GIF/TIFF are not accepted but listed, so that they are
# reported as unreadable (not silently ignored, which would call their annotations "image_missing").
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp"})
REPORTED_SUFFIXES = IMAGE_SUFFIXES | {".gif", ".tif", ".tiff"}
# Suffixes every recent Ultralytics takes as images (its IMG_FORMATS, less what we do not accept); OpenCV then
# decodes by content, so a PNG named .jpg reads fine. An image with another suffix gets its format's own.
TRAINABLE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".webp"})
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}
# Pillow's names for the formats we accept; `Image.open(formats=...)` is restricted to the sniffed one.
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: libpng (OpenCV) fails a PNG without it
_ORIENTATION_TAG = 0x0112
# Where OpenCV may find an EXIF orientation: JPEG APP1 "Exif", PNG "eXIf", WebP "EXIF".
_EXIF_MARK = re.compile(rb"exif", re.IGNORECASE)
# Formats a person may reasonably hand us that we do not accept: named in the message.
_OTHER_MAGIC = {b"GIF8": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF", b"<?xm": "XML", b"<ann": "XML"}


class ImageError(DataError):
    """An image that cannot be used: `code` is `image_unreadable` or `image_truncated`."""


@dataclass(frozen=True)
class ImageInfo:
    """What validation needs to know about an image. width/height are the stored pixels, before EXIF."""

    format: str  # "jpeg" | "png" | "bmp" | "webp"
    width: int
    height: int
    orientation: int  # valid EXIF orientation 1..8; 1 when absent or invalid


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes of a file (12 are enough), or None when it is none of ours."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def has_image_suffix(name: str) -> bool:
    """Whether a file name says "image" (accepted or only reported); other files are judged by their bytes."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in REPORTED_SUFFIXES


def trainable_suffix(name: str, fmt: str) -> str:
    """The suffix an image gets where Ultralytics reads it: its own when Ultralytics accepts it, else its format's."""
    dot = name.rfind(".")
    suffix = name[dot:] if dot >= 0 else ""
    return suffix if suffix.lower() in TRAINABLE_SUFFIXES else FORMAT_SUFFIX[fmt]


def _describe_unknown(data: bytes) -> str:
    for magic, name in _OTHER_MAGIC.items():
        if data.startswith(magic):
            return f"a {name} file, not a JPEG, PNG, BMP or WebP image"
    return f"not a JPEG, PNG, BMP or WebP image (starts with {data[:8].hex(' ')})"


def _orientation(image: object) -> int:
    """EXIF orientation 1..8, or 1 for a missing, invalid or unparsable tag (valid input, not an issue)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG)  # type: ignore[attr-defined]
    except Exception:  # broken EXIF comes in endless shapes (struct, value, key, syntax errors)
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def _exc_text(exc: Exception) -> str:
    """The exception's message without object addresses (`<_io.BytesIO object at 0x7f..>`): reports are stable."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__


def _truncation(fmt: str, data: bytes) -> str | None:
    """Why a file is cut short, judged from its container before decoding; None when it looks whole."""
    if fmt == "jpeg" and not data.endswith(_JPEG_END):
        return "JPEG does not end with its end marker (FFD9): the file is cut short"
    if fmt == "png" and data.rfind(_PNG_END) < 0:
        return "PNG has no IEND chunk: the file is cut short"
    if fmt == "webp" and len(data) < 8 + int.from_bytes(data[4:8], "little"):
        return f"WebP holds {len(data)} bytes but its RIFF header announces {8 + int.from_bytes(data[4:8], 'little')}"
    return None


def _decode_error(fmt: str, exc: Exception) -> ImageError:
    text = _exc_text(exc)
    if "truncated" in text.lower():
        return ImageError("image_truncated", f"{fmt.upper()} data ends early ({text}): re-export or re-download it")
    return ImageError("image_unreadable", f"{fmt.upper()} fails to decode ({text}): re-export it or remove it")


def inspect_image(data: bytes) -> ImageInfo:
    """Identify and fully decode one image.

    Args:
        data: the whole file's bytes.

    Returns:
        The true format, the stored size (before EXIF rotation) and the EXIF orientation.

    Raises:
        ImageError: `image_unreadable` (empty, not an image, fails to decode) or `image_truncated` (decodes only
            partly; a JPEG that does not end with its end marker FFD9, which Ultralytics would rewrite in place).
    """
    if not data:
        raise ImageError("image_unreadable", "empty file (0 bytes): replace it with the real image or remove it")
    fmt = sniff_format(data[:12])
    if fmt is None:
        raise ImageError("image_unreadable", _describe_unknown(data))
    truncation = _truncation(fmt, data)
    if truncation:
        # Checked before decoding: Ultralytics rewrites such a JPEG in place, and libpng refuses such a PNG.
        raise ImageError("image_truncated", f"{truncation}; re-export or re-download it")
    # Pillow warns about corrupt EXIF and large images; the outcome is what counts, not the noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = _decode(data, fmt)
    _check_opencv(data, info)
    return info


def _decode(data: bytes, fmt: str) -> ImageInfo:
    from PIL import Image, ImageFile

    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.UnidentifiedImageError:
        raise ImageError("image_unreadable", f"{fmt.upper()} header is not valid: re-export it") from None
    except Exception as exc:  # Pillow raises many types for a broken header (and DecompressionBombError)
        raise ImageError("image_unreadable", f"{fmt.upper()} header cannot be read ({_exc_text(exc)})") from None
    with image:
        # Decoding must fail on missing data, whatever another library set this global to.
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        except Exception as exc:
            raise _decode_error(fmt, exc) from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError("image_unreadable", f"{fmt.upper()} has no pixels ({width}x{height})")
        return ImageInfo(format=fmt, width=width, height=height, orientation=_orientation(image))


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


def _check_opencv(data: bytes, info: ImageInfo) -> None:
    """Refuse what OpenCV (Ultralytics' reader) cannot decode, or shows in another frame than `info` says.

    Pillow decodes a PNG whose image data ends early (missing rows) or has a bad IDAT checksum, where libpng
    fails (Ultralytics then stops with "Image Not Found"); and Pillow may read another EXIF block than OpenCV
    (two APP1 segments, a damaged entry), which would put the labels in the wrong frame.
    """
    import cv2
    import numpy as np

    buffer = np.frombuffer(data, np.uint8)
    name = info.format.upper()
    shown = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if shown is None:
        raise ImageError(
            "image_unreadable",
            f"{name} decodes with Pillow but not with OpenCV, which training reads images with: re-export it",
        )
    size = (shown.shape[1], shown.shape[0])
    if size == displayed_size(info.width, info.height, info.orientation) and _EXIF_MARK.search(data) is None:
        return  # no EXIF that OpenCV could apply: it shows the stored pixels, in the size Pillow found
    stored = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    same = stored is not None and stored.shape[:2] == (info.height, info.width)
    if not (same and np.array_equal(_orient(stored, info.orientation), shown)):
        raise ImageError(
            "image_unreadable",
            f"{name} EXIF orientation reads as {info.orientation} with Pillow, but OpenCV, which training reads "
            f"images with, shows the {info.width}x{info.height} image otherwise ({size[0]}x{size[1]}): "
            "re-export it with one valid EXIF orientation, or none",
        )


def displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size after EXIF rotation: orientations 5..8 turn the image a quarter, swapping width and height."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
