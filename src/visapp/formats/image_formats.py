"""Which images we take, told by their bytes and their names, and the frame an EXIF orientation shows.

The format comes from the magic bytes, never the file name (real datasets hold PNG files named `.jpg`). What
checking an image's bytes takes (decoding, as training reads it) is `visapp.formats.images`; this module is what
the stages that only name, list or place images need, so that those do not depend on the decoding code.
"""

from __future__ import annotations

FORMATS = ("jpeg", "png", "bmp", "webp")  # the image formats we accept, by their bytes
# Extensions taken as images without looking inside. GIF/TIFF/HEIC are not accepted but listed, so that they
# are reported as unreadable (not silently ignored, which would call their annotations "image_missing").
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp"})
REPORTED_SUFFIXES = IMAGE_SUFFIXES | {".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
# Suffixes every recent Ultralytics takes as images (its IMG_FORMATS, less what we do not accept); OpenCV then
# decodes by content, so a PNG named .jpg reads fine. An image with another suffix gets its format's own.
TRAINABLE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".webp"})
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes of a file (12 are enough), or None when it is none of ours."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE):
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


def displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size after EXIF rotation: orientations 5..8 turn the image a quarter, swapping width and height."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def jpeg_is_rewritten_by_ultralytics(head_and_tail: bytes) -> bool:
    """Whether Ultralytics would rewrite this JPEG in place ("corrupt JPEG restored"): it does so for any JPEG
    whose last two bytes are not the end marker FFD9 (pass the file's first 3 and last 2 bytes, or all of it)."""
    return head_and_tail.startswith(b"\xff\xd8\xff") and not head_and_tail.endswith(b"\xff\xd9")
