"""An example image -> its pixels for a figure, decoded within a memory budget (`DRAW_MAX_BYTES`): a JPEG at
a reduced scale (down to 1/8), other formats at full size and then reduced, in the frame training sees (EXIF
orientation applied). An image that would cost more (a 13,000 x 13,000 PNG, a large progressive JPEG) is not
decoded. Pillow's decompression-bomb check is off for these reads: validate has already checked every image
against data.max_image_pixels. What an EXIF orientation shows is `visapp.formats.images`' to say.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from visapp.formats.image_formats import displayed_size
from visapp.formats.images import exif_orientation, pillow_displayed, pillow_unchecked

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Decoding one example image may cost about this much memory; a larger one is left out of the grid. A JPEG
# decodes at up to 1/8 scale, so this admits any baseline JPEG (a progressive one up to ~16 MP: its decoder
# keeps every DCT coefficient); other formats decode at full size: up to 100 MP of grey, 25 MP of RGB (Pillow
# holds 4 bytes a pixel), fewer where a full-size copy is needed to reduce it, ~6 MP of WebP.
DRAW_MAX_BYTES = 100_000_000
# Modes Pillow's `reduce` works on without a full-size copy; others are converted to RGB first (as they are
# for the grid anyway).
_REDUCIBLE_MODES = frozenset({"L", "RGB", "RGBX", "CMYK", "YCbCr", "I", "F"})
# Bytes a pixel as Pillow holds an image of a mode (4 for the modes not listed).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Bytes a pixel that Pillow's WebP decoder holds (its RGBA canvas, the frame it returns, the image).
_WEBP_BYTES = 16


def drawable(fmt: str, width: int, height: int) -> bool:
    """Whether an image of this format and size may decode within `DRAW_MAX_BYTES`, judged from validate's
    manifest at the least it can cost (1 byte a pixel, 1/64 of the pixels for a JPEG); the header decides when
    it is drawn (`_decode_cost`)."""
    pixels = width * height
    least = {"jpeg": pixels / 64, "webp": _WEBP_BYTES * pixels}.get(fmt, pixels)
    return least <= DRAW_MAX_BYTES


def _decode_cost(image: PILImage, stored: tuple[int, int]) -> int:
    """Bytes that decoding this opened (and, for a JPEG, drafted) image and reducing it take at most."""
    full = stored[0] * stored[1]
    if image.format == "WEBP":
        return _WEBP_BYTES * full
    shown = 4 * image.width * image.height
    if image.format == "JPEG" and image.info.get("progressive"):
        return 2 * len(image.getbands()) * full + shown  # every DCT coefficient, 2 bytes each
    copy = 0 if image.mode in _REDUCIBLE_MODES else shown  # the full-size RGB copy made to reduce it
    return _MODE_BYTES.get(image.mode, 4) * image.width * image.height + copy


def shown_reduced(image_path: Path, cell: int) -> tuple[PILImage, tuple[int, int]] | None:
    """The image at about twice `cell` (px, its longer side), in RGB, in the frame training sees, and the frame
    Pillow sees; None when decoding it would cost more than `DRAW_MAX_BYTES`."""
    from PIL import Image

    with pillow_unchecked(), Image.open(image_path) as opened:
        stored = opened.size
        if opened.format == "JPEG":
            opened.draft("RGB", (cell, cell))  # decode at a reduced scale (1/2 to 1/8)
        if _decode_cost(opened, stored) > DRAW_MAX_BYTES:
            return None
        orientation = exif_orientation(opened)  # may decode a PNG: within the budget
        factor = max(1, max(opened.size) // (2 * cell))
        image: PILImage = opened
        if factor > 1:
            image = image if image.mode in _REDUCIBLE_MODES else image.convert("RGB")
            image = image.reduce(factor)
        image = pillow_displayed(image, orientation)
        return image.convert("RGB"), displayed_size(*stored, orientation)
