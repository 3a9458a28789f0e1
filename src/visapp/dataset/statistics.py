"""manifest.jsonl + data/yolo (+ `<raw_dir>.dvc`) -> data/metadata/dataset_metadata.json and PNG figures.

What is counted is what training sees: the images named in the YOLO split lists (`{split}.txt`) and the
lines of their label files (`labels/{split}/{id}.txt`). Objects that convert left out (difficult ones, by
default) are not counted; an image whose label file is empty is a background image.

Frame: sizes are those of the frame training sees, i.e. after the EXIF orientation is applied (the frame the
YOLO labels are normalised by): the manifest's stored `width`/`height`, swapped for orientations 5 to 8.

Statistics (per split and `overall`):
- `image_width` / `image_height`: min, median, max in pixels; `resolutions`: {"WxH": images}.
- `box_width` / `box_height`: quantiles p0, p5, p25, p50, p75, p95, p100 of the relative (0..1) box sizes
  of the label lines, linear interpolation (numpy's default); null when there are no objects.
- `box_size_coco`: COCO's buckets on the pixel area `w*W * h*H` in the displayed frame: small < 32², medium
  < 96², large otherwise. The area is rounded to 6 decimals first, so that float noise does not move a box
  that sits exactly on a threshold.
All floats are rounded to 6 decimals.

Beside the statistics:
- `class_coverage`: per split, the share of its images that hold each class (0..1);
- `annotation_heatmap`: where boxes lie, per class: counts of box centres (the YOLO labels' cx, cy) on a
  `HEATMAP_BINS` x `HEATMAP_BINS` grid over the image, rows top to bottom;
- `quality`: the dataset-quality findings of validate's report.json (`visapp.dataset.quality`), counted per
  quality code (every code, 0 included), and their total; null when no report is given.

Fingerprint recipe (recompute it with nothing but the files):

    files = sorted([image path relative to raw_dir (POSIX), sha256 hex of the image bytes]
                   for every image in the split lists
                   + [label path relative to yolo_dir (POSIX), sha256 hex of the label file bytes]
                   for the label file of every such image)
    payload = {"classes": [{"id": 0, "name": "circle"}, ...], "files": files}
    fingerprint = sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()

The image hashes are taken from the manifest (validate hashed the bytes it decoded, and the metadata stage
depends on data/raw, so a changed image reruns validate first); label files are hashed here. A label path
includes its split folder, so moving an image to another split changes the fingerprint.

`raw_dvc_hash` is the `md5` that `dvc add` recorded in `<raw_dir>.dvc` (e.g. "3f2a....dir"), as written by
DVC, so it can be looked up in the DVC cache or remote; null when raw_dir is not tracked by a .dvc file.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import statistics
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from visapp.config import Params
from visapp.dataset import figures
from visapp.dataset.figure_images import DRAW_MAX_BYTES, drawable
from visapp.dataset.figures import Example
from visapp.errors import VisError
from visapp.formats.dvcfile import SOURCE_FILE, read_dvc_out
from visapp.formats.image_formats import displayed_size
from visapp.formats.manifest import MANIFEST_FILE, read_manifest
from visapp.formats.metadata import METADATA_FILE
from visapp.formats.report import QUALITY_CODES, REPORT_FILE
from visapp.formats.yolo import (
    DATA_YAML,
    Box,
    label_relpath,
    parse_labels,
    read_data_yaml,
    split_list_images,
)
from visapp.fsio import atomic_path, dumps_json
from visapp.progress import Counter as ProgressCounter
from visapp.progress import ProgressCallback

QUANTILES = {"p0": 0.0, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p100": 1.0}
COCO_SMALL_MAX_AREA = 32**2  # area < this: small
COCO_MEDIUM_MAX_AREA = 96**2  # area < this: medium, else large
GRID_SIZE = figures.GRID_SIZE  # images in the figure of examples
HEATMAP_BINS = figures.HEATMAP_BINS  # annotation_heatmap: cells per side

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One manifest row, reduced to what metadata needs; width/height are of the displayed frame."""

    id: str
    image: str
    sha256: str
    width: int
    height: int
    orientation: int
    format: str = ""  # "jpeg" | "png" | "bmp" | "webp"; "" when unknown
    annotation: str | None = None  # its VOC file, relative to raw_dir (the path of its box findings)


def coco_bucket(area_px: float) -> str:
    """COCO's size bucket for a box of this pixel area."""
    area_px = round(area_px, 6)
    if area_px < COCO_SMALL_MAX_AREA:
        return "small"
    if area_px < COCO_MEDIUM_MAX_AREA:
        return "medium"
    return "large"


def fingerprint(classes: list[str], files: list[tuple[str, str]]) -> str:
    """SHA-256 over the class list and the sorted (relative path, sha256) pairs: see the module docstring."""
    payload = {
        "classes": [{"id": i, "name": name} for i, name in enumerate(classes)],
        "files": sorted([path, digest] for path, digest in files),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest_records(manifest_path: Path) -> dict[str, ImageRecord]:
    """Stream manifest.jsonl into {image path relative to raw_dir: ImageRecord} (objects are not kept)."""
    records: dict[str, ImageRecord] = {}
    for _number, row in read_manifest(manifest_path):
        width, height = displayed_size(row.width, row.height, row.orientation)
        records[row.image] = ImageRecord(
            row.id, row.image, row.sha256, width, height, row.orientation, row.format, row.annotation
        )
    return records


@dataclass
class SplitStats:
    """Running statistics of one split (or of all), fed one image at a time; arrays keep memory small."""

    n_classes: int
    images: int = 0
    background_images: int = 0
    objects_per_class: list[int] = field(default_factory=list)
    images_per_class: list[int] = field(default_factory=list)
    widths: array[int] = field(default_factory=lambda: array("q"))
    heights: array[int] = field(default_factory=lambda: array("q"))
    resolutions: Counter[str] = field(default_factory=Counter)
    box_w: array[float] = field(default_factory=lambda: array("d"))
    box_h: array[float] = field(default_factory=lambda: array("d"))
    coco: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.objects_per_class = [0] * self.n_classes
        self.images_per_class = [0] * self.n_classes

    def add(self, record: ImageRecord, boxes: list[Box]) -> None:
        """Count one image and its boxes."""
        self.images += 1
        self.widths.append(record.width)
        self.heights.append(record.height)
        self.resolutions[f"{record.width}x{record.height}"] += 1
        if not boxes:
            self.background_images += 1
        for class_id in {b.class_id for b in boxes}:
            self.images_per_class[class_id] += 1
        for box in boxes:
            self.objects_per_class[box.class_id] += 1
            self.box_w.append(box.w)
            self.box_h.append(box.h)
            self.coco[coco_bucket(box.w * record.width * box.h * record.height)] += 1

    def coverage(self, classes: list[str]) -> dict[str, float]:
        """The share of this split's images that hold each class."""
        return {
            name: round(n / self.images, 6) if self.images else 0.0
            for name, n in zip(classes, self.images_per_class, strict=True)
        }

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        """The split's section of dataset_metadata.json (or the overall one)."""
        return {
            "images": self.images,
            "objects": sum(self.objects_per_class),
            "objects_per_class": dict(zip(classes, self.objects_per_class, strict=True)),
            "images_per_class": dict(zip(classes, self.images_per_class, strict=True)),
            "background_images": self.background_images,
            "image_width": _min_median_max(self.widths),
            "image_height": _min_median_max(self.heights),
            "resolutions": dict(sorted(self.resolutions.items())),
            "box_width": _quantiles(self.box_w),
            "box_height": _quantiles(self.box_h),
            "box_size_coco": {name: self.coco[name] for name in ("small", "medium", "large")},
        }


def _quality_report(report_path: Path | None) -> dict[str, Any] | None:
    if report_path is None:
        return None
    try:
        report: object = json.loads(Path(report_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.info("metadata: no %s, so no quality section", report_path)
        return None
    except (OSError, ValueError) as exc:
        raise VisError(f"{report_path} is not a readable report ({exc}): rerun the validate stage") from None
    if not isinstance(report, dict):
        raise VisError(f"{report_path} is not a report (not a JSON object): rerun the validate stage")
    return report


def quality_counts(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `quality` section: validate's quality findings per code (all codes, 0 included) and their total;
    None when there is no report to count from."""
    if report is None:
        return None
    by_code = report.get("by_code")
    if not isinstance(by_code, dict):
        raise VisError("report.json has no `by_code` counts: rerun the validate stage")
    counts = {code: int(by_code.get(code, 0)) for code in sorted(QUALITY_CODES)}
    return {"findings": sum(counts.values()), "by_code": counts}


def flagged_paths(report: dict[str, Any] | None) -> dict[str, str]:
    """{file path: its first quality code} of the samples a quality finding names (an image or its annotation);
    dataset-wide findings (path `.`) name no sample."""
    flagged: dict[str, str] = {}
    for issue in (report or {}).get("issues", []):
        if issue.get("code") in QUALITY_CODES and issue.get("path") != ".":
            flagged.setdefault(issue["path"], issue["code"])
    return flagged


def _heatmap(boxes: figures.BoxData, classes: list[str]) -> dict[str, Any]:
    """Counts of box centres per class on a HEATMAP_BINS square grid (rows top to bottom)."""
    grids = figures.centre_grids(boxes, len(classes))
    return {"bins": HEATMAP_BINS, "classes": {name: grids[index].tolist() for index, name in enumerate(classes)}}


def _min_median_max(values: array[int]) -> dict[str, int | float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": round(float(statistics.median(values)), 6), "max": max(values)}


def _quantiles(values: array[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(QUANTILES)
    import numpy as np

    found = np.quantile(np.frombuffer(values, dtype=np.float64), list(QUANTILES.values()))
    return {name: round(float(q), 6) for name, q in zip(QUANTILES, found, strict=True)}


@dataclass
class _ExamplePicker:
    """Keeps the first images (by split order, then id) holding each class, and the first EXIF-rotated ones.

    Rotated images are where a conversion goes wrong most easily, so they get a queue of their own.
    Memory is bounded: at most `per_queue` samples per queue.
    """

    n_classes: int
    per_queue: int = GRID_SIZE
    queues: list[list[tuple[tuple[int, str], Example]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queues = [[] for _ in range(self.n_classes + 1)]  # [rotated, class 0, class 1, ...]

    def offer(self, order: tuple[int, str], example: Example) -> None:
        keys = {b.class_id + 1 for b in example.boxes}
        if example.orientation != 1:
            keys.add(0)
        for key in keys:
            kept = self.queues[key]
            if len(kept) < self.per_queue or order < kept[-1][0]:
                bisect.insort(kept, (order, example), key=lambda item: item[0])
                del kept[self.per_queue :]

    def pick(self, count: int | None = GRID_SIZE) -> list[Example]:
        """Round robin over the queues, so that every class (and rotation) shows up when there is room.

        count=None: every kept example, in that order (a longer pick starts with the shorter one), so that
        the figure can pass over images it cannot draw.
        """
        picked: list[Example] = []
        seen: set[tuple[int, str]] = set()
        queues = [list(kept) for kept in self.queues]
        limit = math.inf if count is None else count
        while len(picked) < limit and any(queues):
            for queue in queues:
                while queue and queue[0][0] in seen:
                    queue.pop(0)
                if queue and len(picked) < limit:
                    order, example = queue.pop(0)
                    seen.add(order)
                    picked.append(example)
        return picked


def _iter_split(
    records: dict[str, ImageRecord], yolo_dir: Path, raw_dir: Path, split: str, list_name: str
) -> Iterator[tuple[ImageRecord, str, bytes]]:
    """(record, label path inside yolo_dir, label bytes) for each image of a split list, one at a time."""
    for image in split_list_images(yolo_dir, raw_dir, list_name):
        record = records.get(image)
        if record is None:
            raise VisError(
                f"{yolo_dir / list_name} names {image}, which the manifest does not hold; rerun the convert stage"
            )
        relpath = label_relpath(split, record.id)
        try:
            with open(f"{yolo_dir}/{relpath}", "rb") as handle:  # noqa: PTH123  once per image: no Path built
                data = handle.read()
        except FileNotFoundError:
            raise VisError(f"{yolo_dir / relpath} is missing for {image}; rerun the convert stage") from None
        yield record, relpath, data


def build_metadata(
    manifest_path: Path,
    yolo_dir: Path,
    raw_dir: Path,
    out_dir: Path,
    classes: list[str],
    progress: ProgressCallback | None = None,
    report_path: Path | None = None,
    raw_dvc_hash: str | None = None,
) -> dict[str, Any]:
    """Compute dataset_metadata.json and the figures, and write them into out_dir atomically.

    Args:
        manifest_path: validate's manifest.jsonl (image sizes, orientations and hashes).
        yolo_dir: convert's output (data.yaml, {split}.txt, labels/{split}/{id}.txt).
        raw_dir: the VOC dataset the split lists point into.
        out_dir: replaced as a whole: dataset_metadata.json and the figures (`figures.FIGURE_FILES`).
        classes: data.classes; must match data.yaml's names. Empty: take data.yaml's names.
        progress: told after each image (task "metadata").
        report_path: validate's report.json, whose quality findings make the `quality` section (None: null).
        raw_dvc_hash: DVC's hash of raw_dir (`raw_dvc_hash`); None: the one `<raw_dir>.dvc` records, if any.

    Returns:
        The metadata written to dataset_metadata.json.
    """

    manifest_path, yolo_dir, raw_dir, out_dir = map(Path, (manifest_path, yolo_dir, raw_dir, out_dir))
    records = read_manifest_records(manifest_path)
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    splits = list(declared.splits)
    classes = list(classes) or declared.names
    if declared.names != classes:
        raise VisError(
            f"{yolo_dir / DATA_YAML} names the classes {declared.names}, but data.classes is {classes}; "
            "rerun the convert stage"
        )

    n_classes = len(classes)
    overall = SplitStats(n_classes)
    per_split = {split: SplitStats(n_classes) for split in splits}
    picker = _ExamplePicker(n_classes)
    box_data = figures.BoxData()
    files: list[tuple[str, str]] = []
    too_large: list[ImageRecord] = []  # for the figure of examples
    report = _quality_report(report_path)
    flagged_by = flagged_paths(report)
    flagged: list[Example] = []  # the first flagged samples, in split order, for flagged.png
    # One step per image, then one per figure: the task is done when the figures are.
    counter = ProgressCounter(progress, "metadata", len(records) + len(figures.FIGURE_FILES), "steps")
    for split_index, split in enumerate(splits):
        for record, label, data in _iter_split(records, yolo_dir, raw_dir, split, declared.splits[split]):
            boxes = parse_labels(data, f"{yolo_dir}/{label}", n_classes)
            per_split[split].add(record, boxes)
            overall.add(record, boxes)
            box_data.add(boxes, record.width, record.height)
            files.append((record.image, record.sha256))
            files.append((label, hashlib.sha256(data).hexdigest()))
            if boxes and not drawable(record.format, record.width, record.height):
                too_large.append(record)
            elif boxes:
                shown = Example(
                    split,
                    record.id,
                    record.width,
                    record.height,
                    record.orientation,
                    raw_dir / record.image,
                    tuple(boxes),
                )
                picker.offer((split_index, record.id), shown)
            code = flagged_by.get(record.image) or flagged_by.get(record.annotation or "")
            if code and len(flagged) < GRID_SIZE and drawable(record.format, record.width, record.height):
                # The caption names the finding in place of the split: `box_tiny/000123`.
                flagged.append(
                    Example(code, record.id, record.width, record.height, record.orientation,
                            raw_dir / record.image, tuple(boxes))
                )  # fmt: skip

    if too_large:
        log.info(
            "figures: samples.png passes over %d image(s) too large to decode within %d MB: %s",
            len(too_large),
            DRAW_MAX_BYTES // 1_000_000,
            ", ".join(f"{r.image} ({r.width}x{r.height} {r.format.upper()})" for r in too_large[:5])
            + (", ..." if len(too_large) > 5 else ""),
        )
    if raw_dvc_hash is None:
        raw_out = read_dvc_out(raw_dir)
        raw_dvc_hash = raw_out.md5 if raw_out else None
    metadata = {
        "classes": [{"id": i, "name": name} for i, name in enumerate(classes)],
        "splits": {split: stats.to_dict(classes) for split, stats in per_split.items()},
        "overall": overall.to_dict(classes),
        "fingerprint": fingerprint(classes, files),
        "raw_dvc_hash": raw_dvc_hash,
        "source": {"manifest_rows": len(records), "split_lists": [f"{s}.txt" for s in splits]},
        "figures": sorted(figures.FIGURE_FILES),
        "class_coverage": {split: stats.coverage(classes) for split, stats in per_split.items()},
        "annotation_heatmap": _heatmap(box_data, classes),
        "quality": quality_counts(report),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # A plain write: the folder is already atomic, and an error then names out_dir, not a temporary path.
        (tmp / METADATA_FILE).write_text(dumps_json(metadata), encoding="utf-8", newline="\n")
        counter.total = counter.done + len(figures.FIGURE_FILES)  # images the split lists do not name: none
        drawings = [  # the slowest first: they start at once
            partial(figures.plot_box_sizes, box_data, classes, tmp / "box_sizes.png"),
            partial(figures.plot_class_distribution, metadata, tmp / "class_distribution.png"),
            partial(figures.plot_annotations, metadata, tmp / "annotations.png"),
            partial(figures.draw_examples, picker.pick(count=None), classes, tmp / "samples.png", count=GRID_SIZE),
            partial(
                figures.draw_examples,
                flagged,
                classes,
                tmp / "flagged.png",
                title=figures.FLAGGED_TITLE,
                empty="no sample flagged",
            ),
        ]
        figures.draw_all(drawings, counter.advance)
    return metadata


def run_metadata(
    params: Params, progress: ProgressCallback | None = None, raw_dvc_hash: str | None = None
) -> dict[str, Any]:
    """The metadata stage: `paths.validated` (manifest, report) + `paths.yolo` + `paths.raw` -> `paths.metadata`."""
    paths = params.paths
    return build_metadata(
        manifest_path=Path(paths.validated) / MANIFEST_FILE,
        yolo_dir=Path(paths.yolo),
        raw_dir=Path(paths.raw),
        out_dir=Path(paths.metadata),
        classes=params.data.classes,
        progress=progress,
        report_path=Path(paths.validated) / REPORT_FILE,
        raw_dvc_hash=raw_dvc_hash or _source_hash(Path(paths.validated)),
    )


def _source_hash(validated_dir: Path) -> str | None:
    """The version of data/raw that validate read (its source.json), when it wrote one."""
    try:
        found = json.loads((validated_dir / SOURCE_FILE).read_text(encoding="utf-8")).get("raw_dvc_hash")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None
