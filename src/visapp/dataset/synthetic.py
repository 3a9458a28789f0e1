"""(out_dir, images, seed) -> the built-in synthetic Pascal VOC dataset: Annotations/*.xml + JPEGImages/*.

`visapp sample` writes it into data/raw; the demo and the tests train on it offline.

Filled circles/ellipses, squares/rectangles and triangles of several sizes and aspect ratios, some
overlapping, on smooth coloured backgrounds with stripes, clutter lines and noise. Object colours are drawn
independently of the class, so a detector has to learn the shapes. About 8% of the images are background
images (most without an XML, one or two with an XML that lists no object); a few are PNG files. No
ImageSets lists: convert then splits by a hash of the image bytes.

Deterministic: every image is drawn from its own generator seeded with (seed, index), JPEG quality is fixed
and no timestamp or EXIF is written, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visapp.errors import VisError
from visapp.formats.voc import BOX_KEYS, VocObject, annotation_xml
from visapp.fsio import atomic_path
from visapp.progress import Counter, ProgressCallback

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

DEFAULT_IMAGES = 200
IMAGE_SIZE = 256  # square images, in pixels
CLASSES = ("circle", "square", "triangle")  # conf/data/voc.yaml's order
MIN_OBJECT_PX = 22  # the short side of a box; smaller objects are hard for a short CPU training
MAX_OBJECT_FRACTION = 0.45  # the long side of a box, as a fraction of IMAGE_SIZE
MAX_OBJECTS = 5
BACKGROUND_FRACTION = 0.08
PNG_FRACTION = 0.08
JPEG_QUALITY = 90
MAX_OVERLAP = 0.3  # intersection / smaller box area: overlaps happen, but every object stays mostly visible
MIN_CONTRAST = 90.0  # RGB distance between an object's colour and the background under it
MAX_STRIPE_AMPLITUDE = 25.0  # background stripes, in grey levels
MAX_CLUTTER_LINES = 3  # thin lines that are not objects


@dataclass
class Shape:
    """One drawn object: its class name and VOC box."""

    name: str
    xmin: int  # VOC: 1-based pixel indices of the first and last pixel the shape covers
    ymin: int
    xmax: int
    ymax: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box as (xmin, ymin, xmax, ymax)."""
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass
class SyntheticSummary:
    """What `write_synthetic` wrote."""

    out_dir: str
    images: int = 0
    jpeg: int = 0
    png: int = 0
    objects_per_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    background_without_xml: int = 0
    background_with_empty_xml: int = 0
    overlapping_pairs: int = 0

    @property
    def background(self) -> int:
        """Images without objects: with no annotation, or an empty one."""
        return self.background_without_xml + self.background_with_empty_xml

    def __str__(self) -> str:
        per_class = ", ".join(f"{name} {count}" for name, count in self.objects_per_class.items())
        return "\n".join(
            [
                f"synthetic dataset: {self.images} images ({self.jpeg} JPEG, {self.png} PNG) -> {self.out_dir}",
                f"  objects: {sum(self.objects_per_class.values())} ({per_class}); "
                f"{self.overlapping_pairs} overlapping pairs",
                f"  background images: {self.background} ({self.background_without_xml} without annotation, "
                f"{self.background_with_empty_xml} with an annotation listing no object)",
            ]
        )


def _plan(images: int, seed: int) -> tuple[set[int], set[int], set[int]]:
    """Which image indices are background (and of those, which get an empty XML) and which are PNG."""
    order = [int(i) for i in np.random.default_rng([seed, 0x5EED]).permutation(images)]
    n_background = max(1, round(BACKGROUND_FRACTION * images)) if images >= 2 else 0
    n_empty_xml = 0 if n_background < 2 else 1 if n_background < 6 else 2
    n_png = max(1, round(PNG_FRACTION * images)) if images >= 3 else 0
    background = set(order[:n_background])
    empty_xml = set(order[:n_empty_xml])
    png = set(order[n_background : n_background + n_png])
    return background, empty_xml, png


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field with faint stripes: float32 (size, size, 3)."""
    from PIL import Image

    cells = int(rng.integers(2, 6))
    coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    field_ = np.array(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
    amplitude = rng.uniform(0, MAX_STRIPE_AMPLITUDE)
    yy, xx = _grid(size)
    step = 2 * np.pi / period
    phase = xx * np.float32(np.cos(angle) * step) + yy * np.float32(np.sin(angle) * step)
    field_ += np.float32(amplitude) * np.sin(phase)[..., None]
    return field_


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _box_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    long_side = float(np.exp(rng.uniform(np.log(MIN_OBJECT_PX * 1.2), np.log(size * MAX_OBJECT_FRACTION))))
    aspect = 1.0 if rng.random() < 0.4 else float(np.exp(rng.uniform(np.log(0.5), 0.0)))
    short_side = max(MIN_OBJECT_PX, long_side * aspect)
    w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    return round(w), round(h)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box's area, boxes as (x0, y0, x1, y1) exclusive."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _shape_mask(name: str, box: tuple[int, int, int, int], rng: np.random.Generator, size: int) -> PILImage:
    """An 'L' mask of the filled shape inscribed in box (x0, y0, x1, y1 exclusive)."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    if name == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif name == "square":
        draw.rectangle((x0, y0, x1, y1), fill=255)
    else:
        # Apex somewhere along one side, base on the opposite side: right, isosceles and skewed triangles,
        # pointing up, down, left or right; the three corners touch all four sides of the box.
        t = float(rng.choice([0.0, 1.0, rng.uniform(0.15, 0.85)], p=[0.15, 0.15, 0.7]))
        side = int(rng.integers(4))
        points: list[tuple[float, float]]
        if side == 0:
            points = [(x0 + t * (x1 - x0), y0), (x0, y1), (x1, y1)]
        elif side == 1:
            points = [(x0 + t * (x1 - x0), y1), (x0, y0), (x1, y0)]
        elif side == 2:
            points = [(x0, y0 + t * (y1 - y0)), (x1, y0), (x1, y1)]
        else:
            points = [(x1, y0 + t * (y1 - y0)), (x0, y0), (x0, y1)]
        draw.polygon(points, fill=255)
    return mask


def _colour_against(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour far enough from the mean colour `under` it to be seen; not tied to the class."""
    mean = under.reshape(-1, 3).mean(axis=0)
    colour = rng.integers(0, 256, 3).astype(np.float32)
    for _ in range(30):
        if np.linalg.norm(colour - mean) >= MIN_CONTRAST:
            break
        colour = rng.integers(0, 256, 3).astype(np.float32)
    return colour


def _draw_image(rng: np.random.Generator, size: int, with_objects: bool) -> tuple[np.ndarray, list[Shape]]:
    from PIL import Image, ImageDraw

    canvas = _background(rng, size)
    # Clutter lines: edges that are not objects, so edges alone do not make a detection.
    clutter = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(0, MAX_CLUTTER_LINES + 1))):
        xy = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)]
        draw.line(xy, fill=255, width=int(rng.integers(1, 3)))
    line_colour = rng.integers(0, 256, 3).astype(np.float32)
    if clutter.getbbox() is not None:
        line_mask = np.asarray(clutter, dtype=np.float32)[..., None] / 255
        canvas = canvas * (1 - line_mask) + line_mask * line_colour

    objects: list[Shape] = []
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1)) if with_objects else 0):
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        w, h = _box_size(rng, size)
        for _ in range(20):
            x0, y0 = int(rng.integers(1, size - w)), int(rng.integers(1, size - h))
            box = (x0, y0, x0 + w, y0 + h)
            if all(_overlap(box, other) <= MAX_OVERLAP for other in boxes):
                break
        else:
            continue
        mask_img = _shape_mask(name, box, rng, size)
        drawn = mask_img.getbbox()  # the pixels actually drawn: the tight box
        if drawn is None:  # no pixel drawn (a shape inscribed in its box always has some): no object
            continue
        left, top, right, bottom = drawn
        region = canvas[top:bottom, left:right]  # a view: blending into it draws on the canvas
        mask = np.asarray(mask_img.crop((left, top, right, bottom)), dtype=np.float32)[..., None] / 255
        colour = _colour_against(rng, region)
        # A gentle linear shading across the object, so its fill is not one flat colour.
        yy, xx = np.mgrid[0 : bottom - top, 0 : right - left].astype(np.float32)
        gx, gy = rng.uniform(-0.25, 0.25, 2)
        shading = 1 + gx * (xx - (right - left) / 2) / w + gy * (yy - (bottom - top) / 2) / h
        region *= 1 - mask
        region += colour[None, None, :] * shading[..., None] * mask
        boxes.append(box)
        objects.append(Shape(name, left + 1, top + 1, right, bottom))
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(3, 12))
    pixels = np.clip(canvas, 0, 255, out=canvas).round().astype(np.uint8)
    return pixels, objects


def _annotation(filename: str, size: int, shapes: list[Shape]) -> str:
    objects = [VocObject(shape.name, bndbox=dict(zip(BOX_KEYS, shape.box, strict=True))) for shape in shapes]
    return annotation_xml(filename, size, size, objects, folder="VIS-sample", database="VIS synthetic sample")


def _count_overlaps(objects: list[Shape]) -> int:
    boxes = [(o.xmin, o.ymin, o.xmax + 1, o.ymax + 1) for o in objects]
    return sum(_overlap(a, b) > 0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def write_synthetic(
    out_dir: Path, images: int | None = None, seed: int = 0, progress: ProgressCallback | None = None
) -> SyntheticSummary:
    """Write the synthetic VOC dataset into `out_dir` (which must not exist or be empty), atomically.

    Args:
        out_dir: the dataset folder (`data/raw` in the pipeline).
        images: how many images; `DEFAULT_IMAGES` when None.
        seed: the same seed and count give byte-identical files.
        progress: told after each image (task "sample").

    Returns:
        Counts: images per format, objects per class, background images.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    images = DEFAULT_IMAGES if images is None else images
    if images < 1:
        raise VisError(f"--images must be at least 1, got {images}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise VisError(f"{out_dir} exists and is not an empty folder: choose another --out, or remove it first")
    background, empty_xml, png = _plan(images, seed)
    summary = SyntheticSummary(out_dir=out_dir.as_posix())
    counter = Counter(progress, "sample", images, "images")
    with atomic_path(out_dir) as tmp:
        (tmp / "Annotations").mkdir(parents=True)
        (tmp / "JPEGImages").mkdir()
        for index in range(images):
            rng = np.random.default_rng([seed, index])
            pixels, objects = _draw_image(rng, IMAGE_SIZE, with_objects=index not in background)
            stem = f"{index + 1:06d}"
            buffer = io.BytesIO()
            if index in png:
                filename = f"{stem}.png"
                Image.fromarray(pixels).save(buffer, "PNG", compress_level=6)
                summary.png += 1
            else:
                filename = f"{stem}.jpg"
                Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False)
                summary.jpeg += 1
            (tmp / "JPEGImages" / filename).write_bytes(buffer.getvalue())
            counter.advance()
            if index in background and index not in empty_xml:
                summary.background_without_xml += 1
                continue
            xml = _annotation(filename, IMAGE_SIZE, objects)
            (tmp / "Annotations" / f"{stem}.xml").write_text(xml, encoding="utf-8", newline="\n")
            summary.background_with_empty_xml += index in empty_xml
            for obj in objects:
                summary.objects_per_class[obj.name] += 1
            summary.overlapping_pairs += _count_overlaps(objects)
    summary.images = images
    return summary
