"""data/validated/manifest.jsonl -> data/yolo: YOLO labels per split, split lists and data.yaml (no image copied).

Conventions (DESIGN.md "Conversion"):

- `cx = ((xmin + xmax) / 2 - 1) / W`, `w = (xmax - xmin) / W` (and likewise with H) when `one_based_coords`,
  which is what Ultralytics' own VOC conversion (`VOC.yaml`) does; without the `- 1` otherwise.
- Ultralytics decodes images with OpenCV, which applies the EXIF orientation, so labels are written in that
  displayed frame and normalised by its size. A manifest row says in which frame its boxes are
  (`boxes_frame`): "stored" boxes are turned into the displayed frame, "rotated" ones already are in it.
- Splits: the manifest's `split` (from ImageSets/Main lists) when set, else a stable hash of the image bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from visapp.config import DataConfig
from visapp.errors import VisError
from visapp.images import displayed_size
from visapp.manifest import read_rows
from visapp.voc import SPLITS

# Leading folders that hold the images in the VOC layouts we accept; they are not part of a sample's id.

Box = tuple[float, float, float, float]


def voc_box_to_yolo(
    xmin: float, ymin: float, xmax: float, ymax: float, width: float, height: float, one_based: bool = True
) -> Box:
    """VOC pixel box -> YOLO (cx, cy, w, h) normalised by (width, height); not clamped, not rounded."""
    shift = 1.0 if one_based else 0.0
    return (
        ((xmin + xmax) / 2 - shift) / width,
        ((ymin + ymax) / 2 - shift) / height,
        (xmax - xmin) / width,
        (ymax - ymin) / height,
    )


def yolo_to_voc_box(
    cx: float, cy: float, w: float, h: float, width: float, height: float, one_based: bool = True
) -> Box:
    """The inverse of `voc_box_to_yolo`: YOLO (cx, cy, w, h) -> VOC (xmin, ymin, xmax, ymax) in pixels."""
    shift = 1.0 if one_based else 0.0
    x_mid, y_mid = cx * width + shift, cy * height + shift
    half_w, half_h = w * width / 2, h * height / 2
    return (x_mid - half_w, y_mid - half_h, x_mid + half_w, y_mid + half_h)


def rotate_yolo_box(box: Box, orientation: int) -> Box:
    """A normalised (cx, cy, w, h) box on the stored pixels -> the same box in the EXIF-displayed frame.

    Orientation n means "the stored pixels must be transformed like this to be shown upright" (EXIF 2.3,
    tag 0x0112), which is what OpenCV's imread/imdecode and PIL's `ImageOps.exif_transpose` do.
    """
    cx, cy, w, h = box
    if orientation == 1:
        return (cx, cy, w, h)
    if orientation == 2:  # mirrored left-right
        return (1 - cx, cy, w, h)
    if orientation == 3:  # rotated 180
        return (1 - cx, 1 - cy, w, h)
    if orientation == 4:  # mirrored top-bottom
        return (cx, 1 - cy, w, h)
    if orientation == 5:  # transposed (mirrored along the main diagonal)
        return (cy, cx, h, w)
    if orientation == 6:  # shown after turning 90 degrees clockwise
        return (1 - cy, cx, h, w)
    if orientation == 7:  # transversed (mirrored along the anti-diagonal)
        return (1 - cy, 1 - cx, h, w)
    if orientation == 8:  # shown after turning 90 degrees counter-clockwise
        return (cy, 1 - cx, h, w)
    raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")


def _ratios(ratios: Any) -> tuple[float, float, float]:
    if isinstance(ratios, Mapping):
        return tuple(float(ratios.get(name, 0.0)) for name in SPLITS)  # type: ignore[return-value]
    if isinstance(ratios, tuple | list):
        values = [float(v) for v in ratios] + [0.0] * (3 - len(ratios))
        return (values[0], values[1], values[2])
    return (float(ratios.train), float(ratios.val), float(ratios.test))


def assign_split(image_sha256: str, seed: int, ratios: Any) -> str:
    """The split of an image, from a stable hash of (seed, SHA-256 of its bytes) and the split ratios.

    Each image's split depends only on its own bytes and the seed, so adding images never moves an existing
    image, and byte-identical images always share a split. `ratios` is a `SplitConfig`, a mapping with
    train/val/test keys, or a (train, val, test) tuple.
    """
    weights = _ratios(ratios)
    digest = hashlib.sha256(f"visapp-split:{seed}:{image_sha256.lower()}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    cumulative = 0.0
    for name, weight in zip(SPLITS, weights, strict=True):
        cumulative += weight
        if weight > 0 and u < cumulative:
            return name
    # Ratios that add up to slightly less than 1 leave a sliver: give it to the last split in use.
    return next(name for name, weight in reversed(list(zip(SPLITS, weights, strict=True))) if weight > 0)


def _clamp(value: float) -> float:
    # Ultralytics rejects a label value outside [0, 1] (it allows 1% slack, we do not rely on it). A box
    # clipped to the image edge by validation can reach -1/W after the one-based `- 1` shift.
    return min(1.0, max(0.0, value))


@dataclass
class SplitCounts:
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


def _row_split(row: dict[str, Any], seed: int, data: DataConfig, where: str) -> str:
    split = row.get("split")
    if split is None:
        return assign_split(row["sha256"], seed, data.split)
    if split not in SPLITS:
        raise VisError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}; rerun the validate stage")
    return split


def _label_lines(
    row: dict[str, Any], class_ids: dict[str, int], data: DataConfig, summary: ConversionSummary, where: str
) -> list[str]:
    """The YOLO label lines of one manifest row, in the frame OpenCV shows."""
    width, height = int(row["width"]), int(row["height"])
    orientation = int(row.get("orientation") or 1)
    frame = row.get("boxes_frame", "stored")
    if orientation not in range(1, 9):
        raise VisError(f"{where}: orientation {orientation} is not 1..8; rerun the validate stage")
    if frame not in ("stored", "rotated"):
        raise VisError(f"{where}: boxes_frame {frame!r} is not 'stored' or 'rotated'; rerun the validate stage")
    if width <= 0 or height <= 0:
        raise VisError(f"{where}: image size {width}x{height} is not positive; rerun the validate stage")
    lines = []
    for obj in row["objects"]:
        if obj.get("difficult") and not data.include_difficult:
            summary.difficult_dropped += 1
            continue
        name = obj["name"]
        if name not in class_ids:
            raise VisError(
                f"{where}: class {name!r} is not in data.classes {list(class_ids)}; "
                "the manifest is stale: rerun the validate stage"
            )
        coords = (float(obj["xmin"]), float(obj["ymin"]), float(obj["xmax"]), float(obj["ymax"]))
        if frame == "stored":
            box = voc_box_to_yolo(*coords, width, height, data.one_based_coords)
            box = rotate_yolo_box(box, orientation)
        else:
            box = voc_box_to_yolo(*coords, *displayed_size(width, height, orientation), data.one_based_coords)
        clamped = tuple(_clamp(v) for v in box)
        if clamped != box:
            summary.clamped_boxes += 1
        summary.objects_per_class[name] = summary.objects_per_class.get(name, 0) + 1
        lines.append(f"{class_ids[name]} " + " ".join(f"{v:.6f}" for v in clamped))
    return lines


def _data_yaml(classes: list[str], splits: list[str], path: str | None) -> str:
    """data.yaml text: deterministic, no `download:` key (nothing may be fetched at train time)."""
    import yaml

    head = {"path": path} if path is not None else {}
    body = {name: f"{name}.txt" for name in splits}
    text = yaml.safe_dump({**head, **body}, sort_keys=False, allow_unicode=True)
    names = yaml.safe_dump({"names": dict(enumerate(classes))}, sort_keys=True, allow_unicode=True)
    return text + names


def convert(manifest_path: Path, raw_dir: Path, out_dir: Path, data: DataConfig, seed: int) -> ConversionSummary:
    """Write YOLO labels, split lists and data.yaml for the manifest's samples into `out_dir` (atomically).

    Args:
        manifest_path: data/validated/manifest.jsonl (one accepted sample a line).
        raw_dir: the VOC dataset the manifest's image paths are relative to.
        out_dir: written as a whole: `labels/{split}/{id}.txt`, `{split}.txt`, `data.yaml`; no image is copied.
        data: classes (their order gives the ids), pixel convention, difficult objects, split ratios.
        seed: the split hash's seed.

    Returns:
        Counts per split and class, and warnings (an empty train or val split: training will refuse it).
    """
    from visapp.fsio import atomic_path

    manifest_path, raw_dir, out_dir = Path(manifest_path), Path(raw_dir), Path(out_dir)
    if not data.classes:
        raise VisError("data.classes is empty: list the class names in params.yaml (their order gives the ids)")
    class_ids = {name: index for index, name in enumerate(data.classes)}
    summary = ConversionSummary(out_dir=out_dir.as_posix(), classes=list(data.classes))
    lists: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: dict[str, str] = {}
    # Split lists name images relative to out_dir (DESIGN.md: paths relative to data.yaml), without resolving
    # symlinks, so the lists are the same wherever the repository is checked out.
    raw_abs, out_abs = raw_dir.absolute(), out_dir.absolute()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        made: set[Path] = set()
        for number, row in read_rows(manifest_path):
            where = f"{manifest_path}:{number} ({row['image']})"
            ident = row["id"]
            if ident in seen:
                raise VisError(f"{where}: id {ident!r} also used by {seen[ident]}; rerun the validate stage")
            seen[ident] = row["image"]
            split = _row_split(row, seed, data, where)
            lines = _label_lines(row, class_ids, data, summary, where)
            label = tmp / "labels" / split / f"{ident}.txt"
            if label.parent not in made:
                label.parent.mkdir(parents=True, exist_ok=True)
                made.add(label.parent)
            label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8", newline="\n")
            counts = summary.splits[split]
            counts.images += 1
            counts.objects += len(lines)
            counts.background += int(not lines)
            summary.rotated_images += int(int(row.get("orientation") or 1) != 1)
            image_path = raw_abs.joinpath(*PurePosixPath(row["image"]).parts)
            lists[split].append(Path(os.path.relpath(image_path, out_abs)).as_posix())
        used = [name for name in SPLITS if name != "test" or lists[name]]
        for name in used:
            text = "".join(f"{path}\n" for path in sorted(lists[name]))
            (tmp / f"{name}.txt").write_text(text, encoding="utf-8", newline="\n")
        (tmp / "labels").mkdir(exist_ok=True)
        (tmp / "data.yaml").write_text(_data_yaml(list(data.classes), used, "."), encoding="utf-8", newline="\n")
    for name in ("train", "val"):
        if not summary.splits[name].images:
            summary.warnings.append(
                f"the {name} split is empty: training needs images in both train and val; "
                "add images, or change data.split (or the ImageSets/Main lists)"
            )
    return summary
