"""Dataset quality beyond validity: what deserves a look before training, reported as warnings.

A finding never rejects a sample and never changes one: it is an issue of severity `warning` in report.json,
with a code of `visapp.formats.report.CODES` (those marked `quality`), the file it is about, and what to do.
The thresholds are the `quality:` params (conf/quality/); `quality.enabled: false` skips everything here.

Two halves, so that no image is read or decoded twice and no pixel crosses a process boundary: per image, in
validate's pass over the samples, `visapp.dataset.image_measures` reduces the grey pixels validation decoded
anyway to three numbers (they stay in the reuse store); per dataset, here, in the parent once every sample is
checked, `check_dataset` judges the manifest rows and those measurements. Thresholds apply only here, so
changing one re-decodes nothing.

Choices made where a rule could go either way:

- measurements are taken at 1/8 of the displayed size: the scale at which validation decodes a JPEG (other
  formats, decoded at full size, are reduced to it), so that a PNG and a JPEG of one picture measure alike.
  Blur is therefore the blur that survives 1/8 scale: out-of-focus or motion-blurred pictures, not slight
  softness; it is judged only when that reduced image is at least `image_measures.MIN_BLUR_SIDE` pixels on its
  short side, and only for images neither too dark nor too bright (low contrast reads as blur);
- boxes are judged as training sees them: objects marked difficult count only with `data.include_difficult`;
- near-duplicates: the later image (by path) is reported, naming the first one it resembles; byte-identical
  pairs are `duplicate_image` already and are left out; an image's split is its ImageSets list, else the
  split convert will give it (the same hash);
- per-class findings about the dataset as a whole (names, counts, splits, convention) have the path `.`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from visapp.config import DataConfig, Params, QualityConfig
from visapp.dataset import pool
from visapp.dataset.image_measures import MEASURE_SCALE, ImageMeasurement
from visapp.dataset.splits import assign_split
from visapp.formats.image_formats import displayed_size
from visapp.formats.manifest import ManifestObject, ManifestRow
from visapp.formats.report import Issue

log = logging.getLogger(__name__)

# A class whose boxes are nearly all alike has a MAD near 0: without a floor every slight variant would be an
# outlier. 0.1 on the log scale is about 10%.
MIN_SPREAD = 0.1
MAD_TO_SIGMA = 1.4826  # MAD * this estimates the standard deviation of normal data
# Coordinate base: of the boxes touching the image's edges, the share touching x=0 or y=0 (which a 1-based
# dataset cannot have, but for a box clipped there) that makes a dataset 0-based, or at most 1-based.
ZERO_BASED_SHARE = 0.25
ONE_BASED_SHARE = 0.05
OVERLAP_VECTORISED = 32  # boxes in one image past which their pairs are compared with numpy
NEAR_DUPLICATE_CHUNK = 32  # images compared against all earlier ones at a time: their arrays stay in cache
NEAR_DUPLICATE_SIDE_PROCESS = 5000  # pHashes from which their search pays for a process of its own (0.1 s)
LISTED_IN_MESSAGE = 3  # objects named in one issue's message


# ---------------------------------------------------------------- the dataset, in the parent


@dataclass(frozen=True)
class QualityRules:
    """What the quality checks take from the params: their thresholds, and what training and convert do."""

    config: QualityConfig
    imgsz: int | None  # train.imgsz (the longer side an image is scaled to); None: no tiny-box check
    seed: int  # the hash split's seed, to know the split of an image no ImageSets list names

    @classmethod
    def from_params(cls, params: Params) -> QualityRules:
        """The rules the params give."""
        return cls(params.quality, params.train.imgsz, params.seed)

    @property
    def measures(self) -> bool:
        """Whether validate measures each image (what its per-sample outcome then holds)."""
        return self.config.enabled


def check_dataset(
    rows: list[ManifestRow], measurements: dict[str, ImageMeasurement], data: DataConfig, rules: QualityRules
) -> list[Issue]:
    """Every quality finding about the accepted samples (`rows`, sorted by image) and their measurements
    (by image path; an image without one, e.g. a PNG too large to decode, is left out of the image checks)."""
    if not rules.config.enabled:
        return []
    config = rules.config
    splits = {row.image: row.split or assign_split(row.sha256, rules.seed, data.split) for row in rows}
    phashes = {image: m.phash for image, m in measurements.items() if m.phash is not None}
    measured = [row for row in rows if row.image in phashes]
    with _near_duplicate_search(measured, phashes, splits, config.phash_distance) as neighbours:
        issues: list[Issue] = []
        trained = [(row, _trained(row.objects, data)) for row in rows]
        for row, objects in trained:
            issues += _overlapping_boxes(row, objects, config.box_iou)
            if rules.imgsz is not None:
                issues += _tiny_boxes(row, objects, rules.imgsz, config.min_box_px)
            issues += _image_findings(row, measurements.get(row.image), config)
        issues += _box_outliers(trained, config)
        issues += _near_duplicates(measured, neighbours(), splits)
    issues += _coordinate_base(rows, data, config.coords_min_boxes)
    issues += _class_findings(rows, splits, data, config)
    log.info("quality: %d finding(s) in %d accepted samples", len(issues), len(rows))
    return issues


def _trained(objects: Iterable[ManifestObject], data: DataConfig) -> list[tuple[int, ManifestObject]]:
    """(1-based index in the annotation, object) of the objects training sees."""
    return [(index, obj) for index, obj in enumerate(objects, 1) if data.include_difficult or not obj.difficult]


def _label(index: int, obj: ManifestObject) -> str:
    return f"object {index} ({obj.name})"


def _listed(labels: list[str]) -> str:
    shown = ", ".join(labels[:LISTED_IN_MESSAGE])
    return shown + (f" and {len(labels) - LISTED_IN_MESSAGE} more" if len(labels) > LISTED_IN_MESSAGE else "")


# ---------------------------------------------------------------- boxes


def _overlapping_boxes(row: ManifestRow, objects: list[tuple[int, ManifestObject]], min_iou: float) -> list[Issue]:
    """box_duplicate (same class) and box_class_conflict (another class) for each pair with IoU >= min_iou."""
    if len(objects) < 2 or row.annotation is None:
        return []
    issues = []
    for (i, j), iou in _overlaps([(o.xmin, o.ymin, o.xmax, o.ymax) for _, o in objects], min_iou):
        (index_a, a), (index_b, b) = objects[i], objects[j]
        pair = f"{_label(index_a, a)} and {_label(index_b, b)} overlap with IoU {iou:.2f}"
        if a.name == b.name:
            issues.append(Issue.of(row.annotation, "box_duplicate", f"{pair}: one object labelled twice? remove one"))
        else:
            issues.append(
                Issue.of(
                    row.annotation, "box_class_conflict", f"{pair}: one object with two classes? keep the right one"
                )
            )
    return issues


def _overlaps(boxes: list[tuple[float, float, float, float]], min_iou: float) -> list[tuple[tuple[int, int], float]]:
    """((i, j), IoU) of each pair i < j of boxes (x0, y0, x1, y1) with IoU >= min_iou, in (i, j) order: plain
    Python for the few boxes of a typical image (numpy's cost per call is ten times the arithmetic there), numpy
    past OVERLAP_VECTORISED boxes (a crowd scene's hundreds)."""
    if len(boxes) > OVERLAP_VECTORISED:
        import numpy as np

        xy = np.array(boxes, dtype=np.float64)
        wide = np.minimum(xy[:, None, 2], xy[None, :, 2]) - np.maximum(xy[:, None, 0], xy[None, :, 0])
        high = np.minimum(xy[:, None, 3], xy[None, :, 3]) - np.maximum(xy[:, None, 1], xy[None, :, 1])
        inter = np.clip(wide, 0, None) * np.clip(high, 0, None)
        area = (xy[:, 2] - xy[:, 0]) * (xy[:, 3] - xy[:, 1])
        iou = inter / (area[:, None] + area[None, :] - inter)
        pairs = zip(*np.nonzero(np.triu(iou >= min_iou, k=1)), strict=True)
        return [((int(i), int(j)), float(iou[i, j])) for i, j in pairs]
    found = []
    for i, (ax0, ay0, ax1, ay1) in enumerate(boxes):
        area_a = (ax1 - ax0) * (ay1 - ay0)
        for j in range(i + 1, len(boxes)):
            bx0, by0, bx1, by1 = boxes[j]
            inter = max(min(ax1, bx1) - max(ax0, bx0), 0.0) * max(min(ay1, by1) - max(ay0, by0), 0.0)
            if inter > 0:
                iou = inter / (area_a + (bx1 - bx0) * (by1 - by0) - inter)
                if iou >= min_iou:
                    found.append(((i, j), iou))
    return found


def _tiny_boxes(row: ManifestRow, objects: list[tuple[int, ManifestObject]], imgsz: int, min_px: float) -> list[Issue]:
    """box_tiny: boxes whose width or height falls below min_px once the longer image side is scaled to imgsz."""
    scale = imgsz / max(row.width, row.height)
    tiny = [
        f"{_label(index, obj)} {(obj.xmax - obj.xmin) * scale:.1f}x{(obj.ymax - obj.ymin) * scale:.1f} px"
        for index, obj in objects
        if min(obj.xmax - obj.xmin, obj.ymax - obj.ymin) * scale < min_px
    ]
    if not tiny or row.annotation is None:
        return []
    return [
        Issue.of(
            row.annotation,
            "box_tiny",
            f"{len(tiny)} box(es) below {min_px:g} px at train.imgsz {imgsz} ({_listed(tiny)}): too small to learn; "
            "raise train.imgsz, or remove them",
        )
    ]


def _turned(row: ManifestRow) -> bool:
    """Whether a box's width and height swap in the frame training sees (stored boxes of an image that EXIF
    turns a quarter)."""
    return row.boxes_frame == "stored" and row.orientation in (5, 6, 7, 8)


def _box_outliers(
    trained: list[tuple[ManifestRow, list[tuple[int, ManifestObject]]]], config: QualityConfig
) -> list[Issue]:
    """box_size_outlier and box_aspect_outlier: a box far from its class's boxes (median/MAD, log scale) in
    area relative to its image, or in width/height ratio; judged only for classes with enough boxes. `trained`:
    each accepted row with the objects training sees (`_trained`)."""
    import numpy as np

    by_class: dict[str, list[tuple[ManifestRow, int, ManifestObject]]] = {}
    values: dict[str, list[tuple[float, float]]] = {}  # class -> (log relative area, log aspect) of each box
    for row, objects in trained:
        if row.annotation is None:
            continue
        image_area = float(row.width * row.height)
        turned = _turned(row)
        for index, obj in objects:
            width, height = obj.xmax - obj.xmin, obj.ymax - obj.ymin
            if turned:
                width, height = height, width
            by_class.setdefault(obj.name, []).append((row, index, obj))
            values.setdefault(obj.name, []).append((width * height / image_area, width / height))
    found: dict[tuple[str, str], list[str]] = {}  # (annotation, code) -> objects
    for name, boxes in sorted(by_class.items()):
        if len(boxes) < config.outlier_min_boxes:
            continue
        logs = np.log(np.array(values[name], dtype=np.float64))
        for column, code, what in ((0, "box_size_outlier", "size"), (1, "box_aspect_outlier", "aspect ratio")):
            column_values = logs[:, column]
            median = float(np.median(column_values))
            spread = max(MAD_TO_SIGMA * float(np.median(np.abs(column_values - median))), MIN_SPREAD)
            scores = (column_values - median) / spread
            # Only the few outliers are visited in Python (in box order, as the messages list them).
            for position in np.flatnonzero(np.abs(scores) > config.outlier_mad):
                row, index, obj = boxes[position]
                score = float(scores[position])
                direction = (
                    ("larger" if score > 0 else "smaller") if column == 0 else ("wider" if score > 0 else "taller")
                )
                deviations = f"{what} {abs(score):.1f} deviations from {name!r}'s median"
                text = f"{_label(index, obj)} {direction} than usual ({deviations})"
                found.setdefault((row.annotation or "", code), []).append(text)
    return [
        Issue.of(annotation, code, f"{_listed(texts)}: check the box and its class")
        for (annotation, code), texts in sorted(found.items())
    ]


# ---------------------------------------------------------------- images


def _image_findings(row: ManifestRow, measured: ImageMeasurement | None, config: QualityConfig) -> list[Issue]:
    """image_dark, image_bright, image_blurry from the measurement; image_aspect_ratio from the size."""
    issues = []
    long_side, short_side = max(row.width, row.height), min(row.width, row.height)
    if long_side / short_side > config.max_aspect_ratio:
        issues.append(
            Issue.of(
                row.image,
                "image_aspect_ratio",
                f"{row.width}x{row.height}: the long side is {long_side / short_side:.1f} times the short one "
                f"(more than {config.max_aspect_ratio:g}); training letterboxes it into a square, mostly padding",
            )
        )
    if measured is None:
        return issues
    if measured.brightness < config.dark_mean:
        issues.append(
            Issue.of(
                row.image,
                "image_dark",
                f"mean grey level {measured.brightness:.0f} of 255 (below {config.dark_mean:g}): check the exposure",
            )
        )
    elif measured.brightness > config.bright_mean:
        issues.append(
            Issue.of(
                row.image,
                "image_bright",
                f"mean grey level {measured.brightness:.0f} of 255 (above {config.bright_mean:g}): check the exposure",
            )
        )
    elif measured.sharpness is not None and measured.sharpness < config.blur_variance:
        issues.append(
            Issue.of(
                row.image,
                "image_blurry",
                f"variance of the Laplacian {measured.sharpness:.1f} at 1/{MEASURE_SCALE} scale (below "
                f"{config.blur_variance:g}): out of focus or moved? check it",
            )
        )
    return issues


def first_neighbours(
    hashes: Sequence[int], groups: Sequence[int], twins: Sequence[int], max_distance: int
) -> list[tuple[tuple[int, int] | None, tuple[int, int] | None]]:
    """For each hash, the first earlier hash within max_distance bits in the same group and in another group, as
    (index, Hamming distance) or None; hashes of the same twin id (byte-identical images) are never neighbours.

    All pairs are compared (N²/2 64-bit XORs and bit counts, vectorised), NEAR_DUPLICATE_CHUNK rows at a time
    into arrays made once: memory stays near NEAR_DUPLICATE_CHUNK x N x 12 bytes (8 MB at 20,000 images), within
    the cache's reach, and the answer at two pairs an image, however many images look alike.
    """
    import numpy as np

    values = np.array([h - (1 << 64) if h >= 1 << 63 else h for h in hashes], dtype=np.int64).view(np.uint64)
    group, twin = np.asarray(groups, dtype=np.int64), np.asarray(twins, dtype=np.int64)
    shares_bytes = np.bincount(twin)[twin] > 1 if len(twin) else twin.astype(bool)  # rare: handled row by row
    shape = (min(NEAR_DUPLICATE_CHUNK, len(values)), len(values))
    xor, distances = np.empty(shape, np.uint64), np.empty(shape, np.uint8)
    close, same_group, wanted = np.empty(shape, bool), np.empty(shape, bool), np.empty(shape, bool)
    found: list[tuple[tuple[int, int] | None, tuple[int, int] | None]] = []
    for start in range(0, len(values), NEAR_DUPLICATE_CHUNK):
        stop = min(start + NEAR_DUPLICATE_CHUNK, len(values))
        rows = slice(0, stop - start)
        part = (rows, slice(0, stop))
        np.bitwise_xor(values[start:stop, None], values[None, :stop], out=xor[part])
        np.bitwise_count(xor[part], out=distances[part])
        np.less_equal(distances[part], max_distance, out=close[part])
        close[rows, start:stop] &= np.tri(stop - start, dtype=bool, k=-1)  # only earlier images count
        for row in np.flatnonzero(shares_bytes[start:stop]):
            close[row, :stop] &= twin[:stop] != twin[start + row]
        np.equal(group[None, :stop], group[start:stop, None], out=same_group[part])
        np.logical_and(close[part], same_group[part], out=wanted[part])
        same = _first_true(wanted[part], distances[part])
        np.greater(close[part], same_group[part], out=wanted[part])  # close and not same group
        found += zip(same, _first_true(wanted[part], distances[part]), strict=True)
    return found


def _first_true(mask: Any, distances: Any) -> list[tuple[int, int] | None]:
    """Per row of `mask`, (column, distance) of its first True, or None."""
    import numpy as np

    rows = np.arange(mask.shape[0])
    first = mask.argmax(axis=1)
    hit, distance = mask[rows, first].tolist(), distances[rows, first].tolist()
    return [(column, d) if h else None for column, d, h in zip(first.tolist(), distance, hit, strict=True)]


@contextlib.contextmanager
def _near_duplicate_search(
    measured: list[ManifestRow], phashes: dict[str, int], splits: dict[str, str], max_distance: int
) -> Iterator[Callable[[], list[tuple[tuple[int, int] | None, tuple[int, int] | None]]]]:
    """`first_neighbours` of the measured rows' pHashes (images without one, being flat, are left out), as a
    function to call for them. A large search runs in a forked process meanwhile: all pairs are the one
    quality check that grows as N², and the sample workers have left the other cores idle by then."""
    split_ids = {name: i for i, name in enumerate(sorted(set(splits.values())))}
    twin_ids: dict[str, int] = {}
    hashes = [phashes[row.image] for row in measured]
    groups = [split_ids[splits[row.image]] for row in measured]
    twins = [twin_ids.setdefault(row.sha256, len(twin_ids)) for row in measured]
    if len(measured) < NEAR_DUPLICATE_SIDE_PROCESS or pool.cores() < 2 or not pool.can_fork():
        yield lambda: first_neighbours(hashes, groups, twins, max_distance)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=pool.context(fork=True)) as side:
        pending = side.submit(first_neighbours, hashes, groups, twins, max_distance)
        yield pending.result


def _near_duplicates(
    measured: list[ManifestRow],
    neighbours: list[tuple[tuple[int, int] | None, tuple[int, int] | None]],
    splits: dict[str, str],
) -> list[Issue]:
    """image_near_duplicate (same split) and near_duplicate_leak (another split): the later image of each pair
    whose pHashes differ in at most `quality.phash_distance` bits, naming the first earlier image it resembles
    (`neighbours`: `first_neighbours` of the `measured` rows)."""
    issues = []
    for row, (same, other) in zip(measured, neighbours, strict=True):
        if same is not None:
            twin, distance = measured[same[0]], same[1]
            issues.append(
                Issue.of(
                    row.image,
                    "image_near_duplicate",
                    f"looks like {twin.image} (pHash distance {distance} of 64, both in {splits[row.image]}): "
                    "keep one unless they differ on purpose",
                )
            )
        if other is not None:
            twin, distance = measured[other[0]], other[1]
            issues.append(
                Issue.of(
                    row.image,
                    "near_duplicate_leak",
                    f"in {splits[row.image]}, looks like {twin.image} in {splits[twin.image]} (pHash distance "
                    f"{distance} of 64): validation would score what training saw; keep both in one split "
                    "(ImageSets lists) or remove one",
                )
            )
    return issues


# ---------------------------------------------------------------- the dataset as a whole


def _coordinate_base(rows: list[ManifestRow], data: DataConfig, min_boxes: int) -> list[Issue]:
    """coords_convention: the boxes touching the image's edges say whether coordinates start at 0 or at 1,
    and that disagrees with data.one_based_coords.

    A box touching x=0 or y=0 cannot be 1-based (the first pixel is 1); a box touching x=width or y=height
    is 1-based (or 0-based with exclusive ends: then boxes touch 0 as well).
    """
    at_zero = at_far = 0
    for row in rows:
        width, height = (row.width, row.height)
        if row.boxes_frame == "rotated":
            width, height = displayed_size(row.width, row.height, row.orientation)
        for obj in row.objects:
            if obj.xmin <= 0 or obj.ymin <= 0:
                at_zero += 1
            elif obj.xmax >= width or obj.ymax >= height:
                at_far += 1
    touching = at_zero + at_far
    if touching < min_boxes:
        return []
    share = at_zero / touching
    detected = "0-based" if share >= ZERO_BASED_SHARE else "1-based" if share <= ONE_BASED_SHARE else None
    configured = "1-based" if data.one_based_coords else "0-based"
    if detected is None or detected == configured:
        return []
    value = "false" if detected == "0-based" else "true"
    return [
        Issue.of(
            ".",
            "coords_convention",
            f"the boxes look {detected}: of {touching} boxes touching the image's edges, {at_zero} touch x=0 or y=0 "
            f"and {at_far} touch the width or height; data.one_based_coords says {configured}, which shifts every "
            f"label by a pixel: set data.one_based_coords: {value} in conf/data/ (then `make params`)",
        )
    ]


def _folded(name: str) -> str:
    return " ".join(name.split()).casefold()


def _class_findings(
    rows: list[ManifestRow], splits: dict[str, str], data: DataConfig, config: QualityConfig
) -> list[Issue]:
    """class_name_variant, class_rare, class_imbalance and class_split_missing."""
    counts: Counter[str] = Counter()
    per_split: dict[str, Counter[str]] = {}
    for row in rows:
        in_split = per_split.setdefault(splits[row.image], Counter())
        for _, obj in _trained(row.objects, data):
            counts[obj.name] += 1
            in_split[obj.name] += 1
    classes = list(data.classes) or sorted(counts)
    issues = []
    variants: dict[str, list[str]] = {}
    for name in classes:
        variants.setdefault(_folded(name), []).append(name)
    for names in variants.values():
        if len(names) > 1:
            issues.append(
                Issue.of(
                    ".",
                    "class_name_variant",
                    f"the classes {', '.join(repr(n) for n in names)} differ only in letter case or spaces: one class "
                    "split in two? rename the objects to one name",
                )
            )
    for name in classes:
        if 0 < counts[name] < config.min_class_objects:
            issues.append(
                Issue.of(
                    ".",
                    "class_rare",
                    f"{name!r} has {counts[name]} object(s), fewer than {config.min_class_objects}: too few to learn "
                    "it well; add samples of it",
                )
            )
    present = {name: counts[name] for name in classes if counts[name]}
    if len(present) > 1:
        most, fewest = max(present, key=present.__getitem__), min(present, key=present.__getitem__)
        ratio = present[most] / present[fewest]
        if ratio > config.max_imbalance:
            issues.append(
                Issue.of(
                    ".",
                    "class_imbalance",
                    f"{most!r} has {present[most]} objects, {fewest!r} {present[fewest]}: {ratio:.1f} times fewer "
                    f"(more than {config.max_imbalance:g}); add samples of the rare classes",
                )
            )
    for split, in_split in sorted(per_split.items()):
        for name in present:
            if not in_split[name]:
                issues.append(
                    Issue.of(
                        ".",
                        "class_split_missing",
                        f"{name!r} has {present[name]} objects, none in {split}: {split} cannot "
                        f"{'measure' if split != 'train' else 'teach'} it; move some of its samples there",
                    )
                )
    return issues
