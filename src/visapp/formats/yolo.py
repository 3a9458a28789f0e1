"""YOLO detection datasets: label lines, box conversions, split lists and data.yaml, read and written.

- A label file holds one line per object, `class_id cx cy w h`, normalised by the image size, six decimals.
- A split list (`train.txt`) names one image a line, by a path relative to the list's folder; blank lines are
  skipped, and nothing else is special (an image path may start with `#`).
- data.yaml names the class ids and each split's list (or image folder), relative to its `path:` (or, without
  one, to the file's own folder). It never has a `download:` key: nothing may be fetched at train time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.formats import SPLITS
from visapp.fsio import is_plain_relpath

DATA_YAML = "data.yaml"
# Beside data.yaml: one hash of every file convert wrote (labels, split lists, data.yaml). The stages after convert
# depend on this file instead of the folder, so a `dvc repro` checks the folder's N label files once (as convert's
# output), not once per stage that reads them; a label that changes changes the digest.
DIGEST_FILE = "digest.json"
LABELS_DIR = "labels"
IMAGES_DIR = "images"

BoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True)
class Box:
    """One YOLO label line: class id and the normalised centre and size."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float


# ---------------------------------------------------------------- box geometry


def voc_box_to_yolo(
    xmin: float, ymin: float, xmax: float, ymax: float, width: float, height: float, one_based: bool = True
) -> BoxTuple:
    """VOC pixel box -> YOLO (cx, cy, w, h) normalised by (width, height); not clamped, not rounded.

    With `one_based` (VOC's convention, and Ultralytics' own VOC conversion): `cx = ((xmin + xmax) / 2 - 1) / W`.
    """
    shift = 1.0 if one_based else 0.0
    return (
        ((xmin + xmax) / 2 - shift) / width,
        ((ymin + ymax) / 2 - shift) / height,
        (xmax - xmin) / width,
        (ymax - ymin) / height,
    )


def yolo_to_voc_box(
    cx: float, cy: float, w: float, h: float, width: float, height: float, one_based: bool = True
) -> BoxTuple:
    """The inverse of `voc_box_to_yolo`: YOLO (cx, cy, w, h) -> VOC (xmin, ymin, xmax, ymax) in pixels."""
    shift = 1.0 if one_based else 0.0
    x_mid, y_mid = cx * width + shift, cy * height + shift
    half_w, half_h = w * width / 2, h * height / 2
    return (x_mid - half_w, y_mid - half_h, x_mid + half_w, y_mid + half_h)


def to_displayed_frame(
    box: BoxTuple, width: int, height: int, orientation: int, one_based: bool = True
) -> tuple[BoxTuple, tuple[int, int]]:
    """A VOC box on the stored pixels -> the same box on the EXIF-displayed image, in its pixel coordinates.

    Pixel coordinates are mirrored as pixels are: with VOC's 1-based indices a flip maps pixel i to W + 1 - i
    (0-based edges: W - x), so the label of the turned box is Ultralytics' formula applied to the box a person
    would have drawn on the displayed image. Returns the box and the displayed (width, height).
    """
    shift = 1.0 if one_based else 0.0
    cw, ch = width + shift, height + shift
    turns = {
        1: lambda x, y: (x, y),
        2: lambda x, y: (cw - x, y),
        3: lambda x, y: (cw - x, ch - y),
        4: lambda x, y: (x, ch - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (ch - y, x),
        7: lambda x, y: (ch - y, cw - x),
        8: lambda x, y: (y, cw - x),
    }
    if orientation not in turns:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation!r}")
    xmin, ymin, xmax, ymax = box
    (ax, ay), (bx, by) = turns[orientation](xmin, ymin), turns[orientation](xmax, ymax)
    shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)), shown


# ---------------------------------------------------------------- label files


def label_line(class_id: int, box: BoxTuple) -> str:
    """One YOLO label line: the class id, then the box (cx, cy, w, h, normalised) with six decimals."""
    return f"{class_id} " + " ".join(f"{value:.6f}" for value in box)


def label_text(lines: list[str]) -> str:
    """A label file's text: one line each, each ending with a newline (empty for a background image)."""
    return "".join(f"{line}\n" for line in lines)


def parse_labels(data: bytes, path: Path | str, n_classes: int) -> list[Box]:
    """Parse one label file; a line that is not `class cx cy w h` or names no class is a `VisError`."""
    boxes = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError("expected 5 fields")
            box = Box(int(parts[0]), *(float(p) for p in parts[1:]))
        except ValueError as exc:
            raise VisError(f"{path}:{number}: not a YOLO label line ({exc}); rerun the convert stage") from None
        if not 0 <= box.class_id < n_classes:
            raise VisError(
                f"{path}:{number}: class id {box.class_id} is not one of the {n_classes} classes; "
                "data.classes changed since convert ran: rerun it"
            )
        boxes.append(box)
    return boxes


def label_relpath(split: str, sample_id: str) -> str:
    """A label file's path inside the YOLO folder (POSIX)."""
    return f"{LABELS_DIR}/{split}/{sample_id}.txt"


def label_path(yolo_dir: Path, split: str, sample_id: str) -> Path:
    """A label file's path in the YOLO folder `yolo_dir`."""
    return yolo_dir / label_relpath(split, sample_id)


# ---------------------------------------------------------------- split lists


def split_entry_prefix(list_dir: Path, raw_dir: Path) -> str:
    """What a split list in `list_dir` puts before an image's path inside `raw_dir`: the relative path from the
    one folder to the other, without resolving symlinks (so a list is the same wherever the repository is
    checked out), and a `/`; empty when they are the same folder."""
    prefix = Path(os.path.relpath(raw_dir.absolute(), list_dir.absolute())).as_posix()
    return "" if prefix == "." else f"{prefix}/"


def split_list_text(entries: list[str]) -> str:
    """A split list's text: the entries sorted, one a line."""
    return "".join(f"{entry}\n" for entry in sorted(entries))


def read_split_list(list_path: Path) -> list[str]:
    """The entries of a split list, in file order (blank lines skipped)."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VisError(f"{list_path} not found but data.yaml names it; rerun the convert stage") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VisError(f"cannot read {list_path} ({exc}); rerun the convert stage") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_list_images(yolo_dir: Path, raw_dir: Path, list_name: str) -> list[str]:
    """The images of one split list of `yolo_dir`, as paths inside raw_dir (POSIX), sorted."""
    list_path = yolo_dir / list_name
    # normpath, not resolve(): data/raw may hold symlinks into the DVC cache, which resolve() would follow.
    yolo_abs = Path(os.path.normpath(yolo_dir.absolute()))
    raw_abs = Path(os.path.normpath(raw_dir.absolute()))
    # An entry as convert writes it (`split_entry_prefix`, then the image's path inside raw_dir) is cut by
    # string; any other is normalised.
    prefix = split_entry_prefix(yolo_dir, raw_dir)
    images = []
    for entry in read_split_list(list_path):
        if entry.startswith(prefix) and is_plain_relpath(entry[len(prefix) :]):
            images.append(entry[len(prefix) :])
            continue
        image_abs = Path(os.path.normpath(yolo_abs / entry))
        try:
            images.append(image_abs.relative_to(raw_abs).as_posix())
        except ValueError:
            raise VisError(
                f"{list_path}: {entry} is not inside {raw_dir}; rerun the convert stage with this raw folder"
            ) from None
    return sorted(images)


# ---------------------------------------------------------------- data.yaml


@dataclass(frozen=True)
class DataYaml:
    """What a data.yaml declares: class names in id order, each split's entry (a list file or an image folder)."""

    names: list[str]
    splits: dict[str, str]
    path: str | None = None


def data_yaml_text(data: DataYaml) -> str:
    """data.yaml text: deterministic, no `download:` key."""
    import yaml

    head = {"path": data.path} if data.path is not None else {}
    body = {name: data.splits[name] for name in SPLITS if name in data.splits}
    text = yaml.safe_dump({**head, **body}, sort_keys=False, allow_unicode=True)
    return text + yaml.safe_dump({"names": dict(enumerate(data.names))}, sort_keys=True, allow_unicode=True)


def read_data_yaml(path: Path) -> DataYaml:
    """Read a data.yaml (names as a list or an id -> name map); a missing or malformed file is a `VisError`."""
    import yaml

    if not path.is_file():
        raise VisError(f"{path} not found: run the convert stage first (`dvc repro convert`)")
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise VisError(f"cannot read {path}: {exc}; rerun the convert stage") from None
    if not isinstance(raw, dict):
        raise VisError(f"{path} is not a mapping; rerun the convert stage")
    names = raw.get("names") or []
    try:
        if isinstance(names, dict):
            names = [names[key] for key in sorted(names, key=int)]
    except (ValueError, TypeError):
        raise VisError(f"{path}: `names` is not a list or an id -> name map; rerun the convert stage") from None
    if not isinstance(names, list) or not names:
        raise VisError(f"{path}: no class `names`; rerun the convert stage")
    splits = {name: str(raw[name]) for name in SPLITS if raw.get(name)}
    return DataYaml([str(name) for name in names], splits, raw.get("path"))
