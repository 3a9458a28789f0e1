"""An image's grey pixels (validation's decode) -> what the quality checks need of them: mean grey level,
variance of the Laplacian, 64-bit perceptual hash, measured at 1/8 of the displayed size.

Measured per image, in validate's pass over the samples (a pool worker), so that no image is decoded twice
and no pixel crosses a process boundary; the numbers travel in the sample's outcome and stay in the reuse
store. What they are judged against is `visapp.dataset.quality`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MEASURE_SCALE = 8  # measurements are taken at 1/8 of the displayed size (a JPEG's reduced decode)
MIN_BLUR_SIDE = 16  # px at that scale: a smaller image is mostly border to the Laplacian
PHASH_SIZE = 32  # pHash: the image reduced to 32x32, its DCT, the 8x8 lowest frequencies against their median
FLAT_STD = 1.0  # grey levels: an image reduced to 32x32 with less spread than this is flat (no pHash)


MeasurementValues = tuple[float, float | None, str | None]  # brightness, sharpness, the pHash in hex


@dataclass(frozen=True)
class ImageMeasurement:
    """What the quality checks need of an image's pixels (kept in validate's per-sample outcome)."""

    brightness: float  # mean grey level, 0..255
    sharpness: float | None  # variance of the Laplacian; None when the image is too small to judge
    phash: int | None  # 64-bit perceptual hash; None for a flat image (no structure to compare)

    def to_values(self) -> MeasurementValues:
        """As JSON can hold it (a 64-bit integer would lose bits as a JSON number)."""
        sharpness = None if self.sharpness is None else round(self.sharpness, 3)
        phash = None if self.phash is None else f"{self.phash:016x}"
        return (round(self.brightness, 3), sharpness, phash)

    @classmethod
    def from_values(cls, values: MeasurementValues) -> ImageMeasurement:
        """The measurement `to_values` gave (as JSON gives it back: a list)."""
        brightness, sharpness, phash = values
        return cls(
            float(brightness),
            None if sharpness is None else float(sharpness),
            None if phash is None else int(phash, 16),
        )


def measure_image(pixels: Any, size: tuple[int, int]) -> ImageMeasurement:
    """Measure grey pixels (a 2-D uint8 array in the displayed frame) of an image whose displayed size is `size`
    (width, height), at 1/8 of that size: a JPEG's reduced decode is already there, a larger decode is reduced."""
    import cv2
    import numpy as np

    target = (max(1, math.ceil(size[0] / MEASURE_SCALE)), max(1, math.ceil(size[1] / MEASURE_SCALE)))
    grey = pixels
    if (grey.shape[1], grey.shape[0]) != target:
        grey = cv2.resize(grey, target, interpolation=cv2.INTER_AREA)
    # cv2.meanStdDev, not numpy's mean/var/std: on arrays this small, numpy's overhead per call is most of the
    # measuring time (about 60-90 µs an image with it, 110-150 µs with numpy's).
    sharpness = None
    if min(grey.shape) >= MIN_BLUR_SIDE:
        sharpness = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_64F))[1][0, 0]) ** 2
    small = cv2.resize(grey, (PHASH_SIZE, PHASH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    phash = None
    if float(cv2.meanStdDev(small)[1][0, 0]) >= FLAT_STD:  # a flat image's hash is noise: all would look alike
        low = cv2.dct(small)[:8, :8]
        flat = low.ravel()
        middle = np.partition(flat, [31, 32])  # the median of 64 values, without np.median's overhead
        bits = flat > (float(middle[31]) + float(middle[32])) / 2
        phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return ImageMeasurement(float(cv2.mean(grey)[0]), sharpness, phash)
