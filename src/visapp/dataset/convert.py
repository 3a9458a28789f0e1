"""data/validated/manifest.jsonl -> data/yolo: YOLO labels per split, split lists and data.yaml (no image copied).

Conventions (docs/architecture.md, "Conversion"):

- `cx = ((xmin + xmax) / 2 - 1) / W`, `w = (xmax - xmin) / W` (and likewise with H) when `one_based_coords`,
  which is what Ultralytics' own VOC conversion (`VOC.yaml`) does; without the `- 1` otherwise.
- Ultralytics decodes images with OpenCV, which applies the EXIF orientation, so labels are written in that
  displayed frame and normalised by its size. A manifest row says in which frame its boxes are
  (`boxes_frame`): "stored" boxes are turned into the displayed frame (pixel coordinates mirrored as the
  pixels are, so the 1-based shift applies in the displayed frame), "rotated" ones already are in it.
- Splits: the manifest's `split` (from ImageSets/Main lists) when set, else a stable hash of the image bytes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from visapp.config import DataConfig, Params
from visapp.dataset.splits import assign_split
from visapp.errors import VisError
from visapp.formats import SPLITS
from visapp.formats.image_formats import displayed_size
from visapp.formats.manifest import MANIFEST_FILE, ManifestRow, read_manifest
from visapp.formats.yolo import (
    DATA_YAML,
    DIGEST_FILE,
    DataYaml,
    data_yaml_text,
    label_line,
    label_relpath,
    label_text,
    split_entry_prefix,
    split_list_text,
    to_displayed_frame,
    voc_box_to_yolo,
)
from visapp.fsio import atomic_path, write_json
from visapp.progress import Counter, ProgressCallback

log = logging.getLogger(__name__)


def _clamp(value: float) -> float:
    # Ultralytics rejects a label value outside [0, 1] (it allows 1% slack, we do not rely on it). A box
    # clipped to the image edge by validation can reach -1/W after the one-based `- 1` shift.
    return min(1.0, max(0.0, value))


@dataclass
class SplitCounts:
    """What one split received: images, objects, background images."""

    images: int = 0
    objects: int = 0
    background: int = 0


@dataclass
class ConversionSummary:
    """What `convert` wrote: counts per split, what was left out or adjusted, and warnings."""

    out_dir: str
    classes: list[str]
    splits: dict[str, SplitCounts] = field(default_factory=lambda: {name: SplitCounts() for name in SPLITS})
    objects_per_class: dict[str, int] = field(default_factory=dict)
    difficult_dropped: int = 0
    clamped_boxes: int = 0
    rotated_images: int = 0
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        total = sum(s.images for s in self.splits.values())
        lines = [f"convert: {total} images -> {self.out_dir}"]
        for name in SPLITS:
            s = self.splits[name]
            if s.images or name != "test":
                lines.append(f"  {name:<5} {s.images:>7} images {s.objects:>8} objects {s.background:>6} background")
        per_class = ", ".join(f"{name} {self.objects_per_class.get(name, 0)}" for name in self.classes)
        lines.append(f"  objects per class: {per_class}")
        if self.difficult_dropped:
            lines.append(f"  {self.difficult_dropped} difficult objects left out (data.include_difficult: false)")
        if self.rotated_images:
            lines.append(f"  {self.rotated_images} EXIF-rotated images: boxes written in the displayed frame")
        if self.clamped_boxes:
            lines.append(f"  {self.clamped_boxes} boxes clamped into [0, 1]")
        lines.extend(f"  warning: {text}" for text in self.warnings)
        return "\n".join(lines)


def _row_split(row: ManifestRow, seed: int, data: DataConfig, where: str) -> str:
    if row.split is None:
        return assign_split(row.sha256, seed, data.split)
    if row.split not in SPLITS:
        raise VisError(f"{where}: split {row.split!r} is not one of {', '.join(SPLITS)}; rerun the validate stage")
    return row.split


def _label_lines(
    row: ManifestRow, class_ids: dict[str, int], data: DataConfig, summary: ConversionSummary, where: str
) -> list[str]:
    """The YOLO label lines of one manifest row, in the frame OpenCV shows."""
    lines = []
    for obj in row.objects:
        if obj.difficult and not data.include_difficult:
            summary.difficult_dropped += 1
            continue
        if obj.name not in class_ids:
            raise VisError(
                f"{where}: class {obj.name!r} is not in data.classes {list(class_ids)}; "
                "the manifest is stale: rerun the validate stage"
            )
        coords = (float(obj.xmin), float(obj.ymin), float(obj.xmax), float(obj.ymax))
        if row.boxes_frame == "stored":
            coords, shown = to_displayed_frame(coords, row.width, row.height, row.orientation, data.one_based_coords)
        else:
            shown = displayed_size(row.width, row.height, row.orientation)
        box = voc_box_to_yolo(*coords, *shown, data.one_based_coords)
        clamped = (_clamp(box[0]), _clamp(box[1]), _clamp(box[2]), _clamp(box[3]))
        if clamped != box:
            summary.clamped_boxes += 1
        summary.objects_per_class[obj.name] = summary.objects_per_class.get(obj.name, 0) + 1
        lines.append(label_line(class_ids[obj.name], clamped))
    return lines


class _Digest:
    """One sha256 over every file convert writes, in the order written: (path, length, bytes) each (DIGEST_FILE)."""

    def __init__(self) -> None:
        self.hash, self.files = hashlib.sha256(), 0

    def add(self, relpath: str, content: bytes) -> None:
        self.hash.update(f"{relpath}\0{len(content)}\0".encode())
        self.hash.update(content)
        self.files += 1

    def to_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "sha256": self.hash.hexdigest(),
            "about": "one hash of every file convert wrote here; the stages after convert depend on this file",
        }


def convert(
    manifest_path: Path,
    raw_dir: Path,
    out_dir: Path,
    data: DataConfig,
    seed: int,
    progress: ProgressCallback | None = None,
) -> ConversionSummary:
    """Write YOLO labels, split lists and data.yaml for the manifest's samples into `out_dir` (atomically).

    Args:
        manifest_path: data/validated/manifest.jsonl (one accepted sample a line).
        raw_dir: the VOC dataset the manifest's image paths are relative to.
        out_dir: written as a whole: `labels/{split}/{id}.txt`, `{split}.txt`, `data.yaml`, `digest.json`; no image
            is copied.
        data: classes (their order gives the ids), pixel convention, difficult objects, split ratios.
        seed: the split hash's seed.
        progress: told after each sample (task "convert"; the total is unknown: the manifest is streamed).

    Returns:
        Counts per split and class, and warnings (an empty train or val split: training will refuse it).
    """
    manifest_path, raw_dir, out_dir = Path(manifest_path), Path(raw_dir), Path(out_dir)
    if not data.classes:
        raise VisError("data.classes is empty: list the class names in conf/data/ (their order gives the ids)")
    class_ids = {name: index for index, name in enumerate(data.classes)}
    summary = ConversionSummary(out_dir=out_dir.as_posix(), classes=list(data.classes))
    lists: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: dict[str, str] = {}
    # Split lists name images relative to out_dir (paths relative to data.yaml). The manifest's image paths are
    # plain relative POSIX paths (as validate found them), so one prefix serves every image; the label files
    # are written by path string, a few syscalls each: this loop runs once per image.
    image_prefix = split_entry_prefix(out_dir, raw_dir)
    counter = Counter(progress, "convert", None, "samples")
    digest = _Digest()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        made: set[str] = set()
        for number, row in read_manifest(manifest_path):
            where = f"{manifest_path}:{number} ({row.image})"
            if row.id in seen:
                raise VisError(f"{where}: id {row.id!r} also used by {seen[row.id]}; rerun the validate stage")
            seen[row.id] = row.image
            split = _row_split(row, seed, data, where)
            lines = _label_lines(row, class_ids, data, summary, where)
            label = f"{tmp}/{label_relpath(split, row.id)}"
            folder = label.rpartition("/")[0]
            if folder not in made:
                Path(folder).mkdir(parents=True, exist_ok=True)
                made.add(folder)
            content = label_text(lines).encode("utf-8")
            with open(label, "wb") as handle:  # noqa: PTH123  by path string: see above
                handle.write(content)
            digest.add(label[len(str(tmp)) + 1 :], content)
            counts = summary.splits[split]
            counts.images += 1
            counts.objects += len(lines)
            counts.background += int(not lines)
            summary.rotated_images += int(row.orientation != 1)
            lists[split].append(image_prefix + row.image)
            counter.advance()
        used = [name for name in SPLITS if name != "test" or lists[name]]
        for name in used:
            text = split_list_text(lists[name]).encode("utf-8")
            (tmp / f"{name}.txt").write_bytes(text)
            digest.add(f"{name}.txt", text)
        (tmp / "labels").mkdir(exist_ok=True)
        data_yaml = data_yaml_text(DataYaml(list(data.classes), {name: f"{name}.txt" for name in used}, ".")).encode()
        (tmp / DATA_YAML).write_bytes(data_yaml)
        digest.add(DATA_YAML, data_yaml)
        write_json(tmp / DIGEST_FILE, digest.to_dict())
    counter.total = counter.done
    counter.report()
    for name in ("train", "val"):
        if not summary.splits[name].images:
            summary.warnings.append(
                f"the {name} split is empty: training needs images in both train and val; "
                "add images, or change data.split (or the ImageSets/Main lists)"
            )
    return summary


def run_convert(params: Params, progress: ProgressCallback | None = None) -> ConversionSummary:
    """The convert stage: `paths.validated`'s manifest -> `paths.yolo`."""
    paths = params.paths
    return convert(
        Path(paths.validated) / MANIFEST_FILE, Path(paths.raw), Path(paths.yolo), params.data, params.seed, progress
    )
