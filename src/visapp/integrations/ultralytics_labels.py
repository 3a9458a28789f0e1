"""Ultralytics' label cache, written from what validate measured, so that a training does not verify every image
again.

Before it trains, Ultralytics scans each split: it opens every image (to verify it and read its size with the
EXIF rotation applied) and parses every label file, then saves the result as a `labels.cache` beside the label
folder. That scan is a second validate stage at the start of every training (the view is fresh, so no cache
survives): at 100,000 images, most of the time to the first batch. Validate has already opened every image and
kept its stored size and EXIF orientation in the manifest, so the cache can be written without opening one.

A stale cache is impossible by construction: the cache is keyed as Ultralytics keys it (its own `get_hash`
over the label and image paths with their sizes and modification times, and the scan settings), computed after
the view exists, and loaded by Ultralytics' own check. Anything that differs (a file touched afterwards, a
`fraction`, an Ultralytics release that keys its cache another way) makes Ultralytics scan as it always did.
Where the manifest cannot say what the scan would find (a rotated image in a format whose rotation Ultralytics
decodes to learn, an image under 10 pixels it would drop, a label row it would refuse), no cache is written
for that split and Ultralytics scans it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from visapp.formats.manifest import ManifestRow

log = logging.getLogger(__name__)

# Formats whose EXIF rotation Ultralytics applies to the size without decoding (its `exif_size`); for the others
# it decodes the image, and what it finds depends on the versions of OpenCV and Pillow.
_SIZE_FROM_HEADER = {"jpeg", "png"}
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_MIN_SIDE = 10  # Ultralytics drops a smaller image as corrupt


class _Unknown(Exception):
    """The manifest cannot tell what Ultralytics' scan would find for one image."""


def _shape(row: ManifestRow) -> tuple[int, int]:
    """(height, width) as Ultralytics' scan reads it: the stored size, swapped for a rotating EXIF orientation."""
    width, height = row.width, row.height
    if row.orientation in _ROTATED:
        if row.format not in _SIZE_FROM_HEADER:
            raise _Unknown(f"{row.image}: a {row.format} image with EXIF orientation {row.orientation}")
        width, height = height, width
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise _Unknown(f"{row.image}: {row.width}x{row.height} pixels, under Ultralytics' {_MIN_SIDE}")
    return height, width


def _rows(label_file: str) -> list[list[str]]:
    with Path(label_file).open(encoding="utf-8-sig") as handle:
        return [line.split() for line in handle.read().strip().splitlines() if line.strip()]


def _boxes(images: list[str], label_files: list[str], classes: int, single_cls: bool) -> tuple[list[Any], list[str]]:
    """Each label file's rows as Ultralytics' scan leaves them (an (n, 5) float32 array, duplicates removed), and
    the messages it gives when it removes some. Parsed and checked as one array: a per-file array costs more than
    reading the file."""
    import numpy as np

    per_file = [_rows(label_file) for label_file in label_files]
    flat = [row for rows in per_file for row in rows]
    if any(len(row) != 5 for row in flat):
        raise _Unknown("a label row without exactly 5 columns")
    every = np.array(flat, dtype=np.float32).reshape(-1, 5)
    # Ultralytics' own checks: normalised coordinates (1% tolerance), integer classes within the names. It lets
    # some slightly negative values through; convert writes none, so a negative value is left to its scan.
    if len(every) and (every.min() < 0 or every[:, 1:].max() > 1.01):
        raise _Unknown("a coordinate outside 0..1")
    if len(every) and ((every[:, 0] % 1 != 0).any() or (not single_cls and every[:, 0].max() >= classes)):
        raise _Unknown(f"a class id that is not one of the {classes} names")
    boxes = np.split(every, np.cumsum([len(rows) for rows in per_file])[:-1])
    messages = []
    for index, labels in enumerate(boxes):
        if len(labels) > 1 and len(set(map(tuple, labels.tolist()))) < len(labels):
            _, kept = np.unique(labels, axis=0, return_index=True)
            boxes[index] = labels[kept]
            messages.append(f"{images[index]}: {len(labels) - len(kept)} duplicate labels removed")
    return boxes, messages


def _listed_images(list_file: Path) -> list[str]:
    """The images of a split list as Ultralytics reads them (its dataset's `get_img_files`): lines of the file,
    `./` relative to it, those with an image suffix, sorted."""
    from ultralytics.data.utils import IMG_FORMATS

    lines = list_file.read_text(encoding="utf-8-sig").strip().splitlines()
    parent = str(list_file.parent) + os.sep
    listed = [line.replace("./", parent, 1) if line.startswith("./") else line for line in lines]
    return sorted(x.replace("/", os.sep) for x in listed if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def write_label_cache(
    list_file: Path, samples: dict[str, ManifestRow], classes: int, single_cls: bool = False
) -> Path | None:
    """Write the `labels.cache` Ultralytics would write after scanning the split that `list_file` lists.

    Args:
        list_file: a split list of a dataset view (absolute image paths).
        samples: the manifest row of each image, by the path the list names it with.
        classes: the number of class names in the data.yaml.
        single_cls: the training's `single_cls` (part of Ultralytics' key).

    Returns:
        The cache written, or None when Ultralytics is left to scan the split itself (the reason is logged).
    """
    from ultralytics.data.dataset import DATASET_CACHE_VERSION
    from ultralytics.data.utils import get_hash, img2label_paths, save_dataset_cache_file

    images = _listed_images(list_file)
    if not images:
        return None
    label_files: list[str] = img2label_paths(list[str | Path](images))
    try:
        missing = next((image for image in images if image not in samples), None)
        if missing is not None:
            raise _Unknown(f"{missing}: not in the manifest")
        boxes, messages = _boxes(images, label_files, classes, single_cls)
        labels = [
            {
                "im_file": image,
                "shape": _shape(samples[image]),
                "cls": found[:, 0:1],
                "bboxes": found[:, 1:],
                "segments": [],
                "keypoints": None,
                "normalized": True,
                "bbox_format": "xywh",
            }
            for image, found in zip(images, boxes, strict=True)
        ]
    except (_Unknown, OSError, ValueError) as exc:
        log.info("train: Ultralytics verifies the images of %s itself: %s", list_file.name, exc)
        return None
    empty = sum(1 for label in labels if not len(label["cls"]))
    # The key of Ultralytics' YOLODataset.get_cache_hash: no keypoints, the class count, no kpt_shape, single_cls.
    key = get_hash(label_files + images + [str((False, classes, None, single_cls))])
    cache = {"labels": labels, "hash": key, "results": (len(labels), 0, empty, 0, len(labels)), "msgs": messages}
    path = Path(label_files[0]).parent.with_suffix(".cache")
    save_dataset_cache_file(f"{list_file.stem}: ", path, cache, DATASET_CACHE_VERSION)
    return path if path.is_file() else None
