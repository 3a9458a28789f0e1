"""Two versions of a VOC dataset -> what changed between them, and whether it changed more than a gate allows.

Pure functions over each version's samples (`DiffSample`: id, image content hash, boxes), so the comparison
runs in memory; `read_samples` builds the samples from a VOC folder, with the pairing rules of validation.

Samples of the two versions are paired in this order:
1. the same id and the same image bytes: the same sample;
2. the same image bytes under another id: renamed (moved to another path);
3. the same id with other image bytes: the image was replaced;
the rest are added (only in B) or removed (only in A).

The boxes of every pair are matched greedily by IoU (the highest first, a same-class pair first on a tie); a
match needs IoU >= `MATCH_IOU`. A matched box whose centre changed has moved, one whose width or height
changed was resized (a box with one edge dragged is both), one whose class changed was relabelled; a box left
unmatched in B was added, in A removed.
A pair with any such box change is a relabelled sample; a pair with the same id, image and boxes is unchanged.

Drift statistics compare the distributions of all boxes of each version: total-variation distance and
Jensen-Shannon distance (base 2) of the class frequencies, both 0 for the same distribution and 1 for disjoint
ones; the two-sample Kolmogorov-Smirnov statistic of box width, height and size (square root of the area), in
pixels, 0 for the same empirical distribution and 1 for ones that do not overlap.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visapp.errors import DataError
from visapp.formats.voc import AnnotationError, box_corners, object_label, parse_annotation
from visapp.formats.voc_ids import sample_id
from visapp.formats.voc_layout import discover_samples

log = logging.getLogger(__name__)

MATCH_IOU = 0.5  # two boxes are the same object when they overlap at least this much


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class Box:
    """One object: class name and pixel corners (VOC's, as the annotation writes them)."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        """The box's width in pixels."""
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        """The box's height in pixels."""
        return self.ymax - self.ymin

    @property
    def centre(self) -> tuple[float, float]:
        """The box's centre (x, y) in pixels."""
        return (self.xmin + self.xmax) / 2, (self.ymin + self.ymax) / 2

    def text(self) -> str:
        """The box for a person: `dog (10,20,110,220)`."""
        return f"{self.name} ({self.xmin:g},{self.ymin:g},{self.xmax:g},{self.ymax:g})"


@dataclass(frozen=True)
class DiffSample:
    """One sample of a dataset version: its id (`sample_id`), image path and content hash, and its boxes."""

    id: str
    image: str
    image_hash: str
    boxes: tuple[Box, ...] = ()


@dataclass
class SampleSet:
    """A version's samples, and what could not be compared: (path, why) for each file left out."""

    samples: list[DiffSample]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def md5_file(path: Path) -> str:
    """The md5 of a file's bytes: what DVC records for it, so hashes from either source compare."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _boxes(annotation: bytes, path: str, skipped: list[tuple[str, str]]) -> tuple[Box, ...]:
    boxes = []
    for number, obj in enumerate(parse_annotation(annotation).objects, start=1):
        try:
            corners = box_corners(obj, object_label(number, obj))
        except DataError as exc:  # what validation rejects as bbox_invalid
            skipped.append((path, exc.message))
            continue
        boxes.append(Box(obj.name, *corners))
    return tuple(boxes)


def read_samples(raw_dir: Path, image_hash: Callable[[str], str] | None = None) -> SampleSet:
    """A VOC folder -> its samples, paired as validation pairs them.

    `image_hash(path)` gives an image's content hash from its path relative to `raw_dir` (the md5 DVC
    recorded, when the folder holds stand-ins for the images); by default the file's md5. An image without an
    annotation is a sample without boxes; an annotation without an image, one that cannot be parsed, a box
    without four numbers, and a second image with an id already taken are left out and listed in `skipped`.
    """
    raw_dir = Path(raw_dir)
    image_hash = image_hash or (lambda rel: md5_file(raw_dir / rel))
    problems: list[tuple[str, str]] = []
    files = discover_samples(raw_dir, problems)
    skipped = list(problems)
    samples: dict[str, DiffSample] = {}
    for sample in files:
        if sample.image is None:
            skipped.append((sample.annotation or "", "annotation without an image"))
            continue
        ident = sample_id(sample.image)
        if ident in samples:
            skipped.append((sample.image, f"its id {ident!r} is taken by {samples[ident].image}"))
            continue
        boxes: tuple[Box, ...] = ()
        if sample.annotation is not None:
            try:
                boxes = _boxes((raw_dir / sample.annotation).read_bytes(), sample.annotation, skipped)
            except (OSError, AnnotationError) as exc:
                skipped.append((sample.annotation, str(exc)))
                continue
        samples[ident] = DiffSample(ident, sample.image, image_hash(sample.image), boxes)
    return SampleSet(sorted(samples.values(), key=lambda s: s.id), skipped)


# ---------------------------------------------------------------- box matching


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    width = min(a.xmax, b.xmax) - max(a.xmin, b.xmin)
    height = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / (a.width * a.height + b.width * b.height - overlap)


def match_boxes(before: Sequence[Box], after: Sequence[Box]) -> list[tuple[int, int, float]]:
    """Greedy matching by IoU: (index in before, index in after, IoU) for every pair with IoU >= MATCH_IOU,
    the highest IoU first; on a tie a pair of the same class first, then the lower indices."""
    candidates = []
    for i, a in enumerate(before):
        for j, b in enumerate(after):
            overlap = iou(a, b)
            if overlap >= MATCH_IOU:
                candidates.append((-overlap, a.name != b.name, i, j))
    matched, used_before, used_after = [], set(), set()
    for negative_iou, _, i, j in sorted(candidates):
        if i not in used_before and j not in used_after:
            used_before.add(i)
            used_after.add(j)
            matched.append((i, j, -negative_iou))
    return sorted(matched)


@dataclass(frozen=True)
class BoxChange:
    """A box matched in both versions that changed: moved (centre), resized (width/height), class changed."""

    before: Box
    after: Box
    iou: float
    centre_shift: float  # pixels, Euclidean
    moved: bool
    resized: bool
    class_changed: bool


@dataclass(frozen=True)
class SampleChange:
    """A sample in both versions whose boxes changed."""

    id_before: str
    id_after: str
    changed: tuple[BoxChange, ...]
    added: tuple[Box, ...]
    removed: tuple[Box, ...]


def compare_boxes(before: DiffSample, after: DiffSample) -> SampleChange | None:
    """What changed in the boxes of one sample, or None when nothing did."""
    changed = []
    matched = match_boxes(before.boxes, after.boxes)
    for i, j, overlap in matched:
        a, b = before.boxes[i], after.boxes[j]
        moved = a.centre != b.centre
        resized = (a.width, a.height) != (b.width, b.height)
        if moved or resized or a.name != b.name:
            shift = math.dist(a.centre, b.centre)
            changed.append(BoxChange(a, b, round(overlap, 6), round(shift, 6), moved, resized, a.name != b.name))
    matched_before, matched_after = {i for i, _, _ in matched}, {j for _, j, _ in matched}
    removed = tuple(box for i, box in enumerate(before.boxes) if i not in matched_before)
    added = tuple(box for j, box in enumerate(after.boxes) if j not in matched_after)
    if not (changed or added or removed):
        return None
    return SampleChange(before.id, after.id, tuple(changed), added, removed)


# ---------------------------------------------------------------- distributions


def total_variation(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Total-variation distance of two count distributions: half the L1 distance of their frequencies."""
    p, q = _frequencies(a, b)
    if p is None or q is None:
        return 0.0 if p is q else 1.0
    return float(0.5 * np.abs(p - q).sum())


def jensen_shannon(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Jensen-Shannon distance (the square root of the divergence, base 2) of two count distributions."""
    p, q = _frequencies(a, b)
    if p is None or q is None:
        return 0.0 if p is q else 1.0
    middle = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nonzero = x > 0
        return float((x[nonzero] * np.log2(x[nonzero] / middle[nonzero])).sum())

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def _frequencies(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both distributions over the union of their keys, as frequencies; None for one without counts."""
    keys = sorted(set(a) | set(b))
    result = []
    for counts in (a, b):
        values = np.array([counts.get(key, 0) for key in keys], dtype=float)
        result.append(values / values.sum() if values.sum() > 0 else None)
    return result[0], result[1]


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical distribution
    functions (what scipy.stats.ks_2samp reports). 0 when both are empty, 1 when only one is."""
    if not len(a) or not len(b):
        return 0.0 if len(a) == len(b) else 1.0
    x, y = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    points = np.concatenate([x, y])
    gap = np.searchsorted(x, points, side="right") / len(x) - np.searchsorted(y, points, side="right") / len(y)
    return float(np.abs(gap).max())


@dataclass(frozen=True)
class ClassCount:
    """A class's objects in each version, and the change."""

    name: str
    before: int
    after: int
    delta: int


@dataclass(frozen=True)
class SizeDrift:
    """One box dimension (pixels) in both versions: quartiles, and the KS statistic between them."""

    measure: str  # width, height, size (square root of the area)
    before: tuple[float, float, float] | None  # p25, median, p75; None without boxes
    after: tuple[float, float, float] | None
    ks: float


def _quartiles(values: Sequence[float]) -> tuple[float, float, float] | None:
    if not len(values):
        return None
    q1, q2, q3 = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75])
    return round(float(q1), 3), round(float(q2), 3), round(float(q3), 3)


def _measures(boxes: Iterable[Box]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"width": [], "height": [], "size": []}
    for box in boxes:
        found["width"].append(box.width)
        found["height"].append(box.height)
        found["size"].append(math.sqrt(box.width * box.height))
    return found


# ---------------------------------------------------------------- the diff


@dataclass
class DatasetDiff:
    """Everything that changed from version A (before) to version B (after); see the module docstring."""

    samples_before: int
    samples_after: int
    added: list[str]  # ids in B only
    removed: list[str]  # ids in A only
    renamed: list[tuple[str, str]]  # (id in A, id in B): the same image bytes
    replaced: list[str]  # the same id, other image bytes
    unchanged: int
    relabelled: list[SampleChange]
    class_counts: list[ClassCount]
    class_total_variation: float
    class_jensen_shannon: float
    box_sizes: list[SizeDrift]

    @property
    def paired(self) -> int:
        """How many samples of A are still in B (A's samples but the removed ones)."""
        return self.samples_before - len(self.removed)

    def box_totals(self) -> dict[str, int]:
        """Box changes inside samples of both versions, by kind."""
        changes = [change for sample in self.relabelled for change in sample.changed]
        return {
            "moved": sum(change.moved for change in changes),
            "resized": sum(change.resized for change in changes),
            "class_changed": sum(change.class_changed for change in changes),
            "added": sum(len(sample.added) for sample in self.relabelled),
            "removed": sum(len(sample.removed) for sample in self.relabelled),
        }

    def is_empty(self) -> bool:
        """Nothing changed: the same samples with the same images and boxes."""
        return not (self.added or self.removed or self.renamed or self.replaced or self.relabelled)


def _pair(
    before: Sequence[DiffSample], after: Sequence[DiffSample]
) -> tuple[list[tuple[DiffSample, DiffSample, str]], list[str], list[str]]:
    """[(A sample, B sample, how)] with how in same/renamed/replaced, the removed ids and the added ids."""
    left = {s.id: s for s in before}
    right = {s.id: s for s in after}
    pairs = []
    for ident in sorted(set(left) & set(right)):
        if left[ident].image_hash == right[ident].image_hash:
            pairs.append((left.pop(ident), right.pop(ident), "same"))
    by_hash: dict[str, list[DiffSample]] = {}
    for sample in sorted(right.values(), key=lambda s: s.id):
        by_hash.setdefault(sample.image_hash, []).append(sample)
    for sample in sorted(left.values(), key=lambda s: s.id):
        candidates = by_hash.get(sample.image_hash)
        if candidates:
            partner = candidates.pop(0)
            pairs.append((left.pop(sample.id), right.pop(partner.id), "renamed"))
    for ident in sorted(set(left) & set(right)):
        pairs.append((left.pop(ident), right.pop(ident), "replaced"))
    return pairs, sorted(left), sorted(right)


def diff_samples(before: Sequence[DiffSample], after: Sequence[DiffSample]) -> DatasetDiff:
    """Compare two versions' samples (see the module docstring)."""
    pairs, removed, added = _pair(before, after)
    renamed, replaced, relabelled, unchanged = [], [], [], 0
    for a, b, how in sorted(pairs, key=lambda pair: pair[0].id):
        change = compare_boxes(a, b)
        if change is not None:
            relabelled.append(change)
        if how == "renamed":
            renamed.append((a.id, b.id))
        elif how == "replaced":
            replaced.append(a.id)
        elif change is None:
            unchanged += 1

    counts_before = Counter(box.name for sample in before for box in sample.boxes)
    counts_after = Counter(box.name for sample in after for box in sample.boxes)
    class_counts = [
        ClassCount(name, counts_before[name], counts_after[name], counts_after[name] - counts_before[name])
        for name in sorted(set(counts_before) | set(counts_after))
    ]
    sizes_before = _measures(box for sample in before for box in sample.boxes)
    sizes_after = _measures(box for sample in after for box in sample.boxes)
    box_sizes = [
        SizeDrift(
            measure,
            _quartiles(sizes_before[measure]),
            _quartiles(sizes_after[measure]),
            round(ks_statistic(sizes_before[measure], sizes_after[measure]), 6),
        )
        for measure in ("width", "height", "size")
    ]
    return DatasetDiff(
        samples_before=len(before),
        samples_after=len(after),
        added=added,
        removed=removed,
        renamed=renamed,
        replaced=replaced,
        unchanged=unchanged,
        relabelled=relabelled,
        class_counts=class_counts,
        class_total_variation=round(total_variation(counts_before, counts_after), 6),
        class_jensen_shannon=round(jensen_shannon(counts_before, counts_after), 6),
        box_sizes=box_sizes,
    )


# ---------------------------------------------------------------- headline numbers and the gate


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def headline(diff: DatasetDiff) -> dict[str, int | float]:
    """The numbers a CI job or `dvc metrics diff` tracks, flat: counts, fractions and drift statistics."""
    boxes = diff.box_totals()
    size_ks = {drift.measure: drift.ks for drift in diff.box_sizes}
    return {
        "samples_before": diff.samples_before,
        "samples_after": diff.samples_after,
        "added": len(diff.added),
        "removed": len(diff.removed),
        "renamed": len(diff.renamed),
        "replaced": len(diff.replaced),
        "unchanged": diff.unchanged,
        "relabelled": len(diff.relabelled),
        "boxes_before": sum(count.before for count in diff.class_counts),
        "boxes_after": sum(count.after for count in diff.class_counts),
        "boxes_moved": boxes["moved"],
        "boxes_resized": boxes["resized"],
        "boxes_class_changed": boxes["class_changed"],
        "boxes_added": boxes["added"],
        "boxes_removed": boxes["removed"],
        "removed_fraction": _fraction(len(diff.removed), diff.samples_before),
        "added_fraction": _fraction(len(diff.added), diff.samples_before),
        "relabelled_fraction": _fraction(len(diff.relabelled), diff.paired),
        "class_total_variation": diff.class_total_variation,
        "class_jensen_shannon": diff.class_jensen_shannon,
        "box_width_ks": size_ks["width"],
        "box_height_ks": size_ks["height"],
        "box_size_ks": size_ks["size"],
    }


# gate limit (a `diff.*` param and a --option) -> the headline number it bounds
GATED = {
    "max_removed_fraction": "removed_fraction",
    "max_relabelled_fraction": "relabelled_fraction",
    "max_class_drift": "class_total_variation",
    "max_box_size_drift": "box_size_ks",
}


def gate(numbers: Mapping[str, int | float], limits: Mapping[str, float]) -> list[str]:
    """The limits the diff exceeds, each as "removed_fraction 0.25 > max_removed_fraction 0.1"; [] passes."""
    failures = []
    for limit, key in GATED.items():
        if numbers[key] > limits[limit]:
            failures.append(f"{key} {numbers[key]:g} > {limit} {limits[limit]:g}")
    return failures
