"""A checked dataset -> a thumbnail (PNG) of each sample an issue names, its YOLO labels drawn; and any image with
boxes drawn on it (a model's answer). Drawn by the code that draws each cell of the figure of flagged samples
(`figures._render_example`, called by its private name: a public name would change the code the metadata and
evaluate stages depend on, and so dvc.lock, for no change of their outputs).

`draw_flagged` reads what the data stages wrote (report, manifest, labels, data.yaml) and writes, into a new
folder, one PNG per sample an issue names (its image or its annotation; at most `limit`, in the report's order)
and `index.json`: `{"samples": [{"file", "image", "annotation", "split", "codes"}], "left_out": n}`. Rejected
samples have no labels, so they have no thumbnail: the report lists them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from visapp.config import Params
from visapp.dataset.figures import CELL, Example, _render_example
from visapp.dataset.statistics import read_manifest_records
from visapp.formats.image_formats import displayed_size
from visapp.formats.images import exif_orientation, pillow_unchecked
from visapp.formats.manifest import MANIFEST_FILE
from visapp.formats.report import REPORT_FILE
from visapp.formats.yolo import DATA_YAML, Box, label_path, parse_labels, read_data_yaml
from visapp.fsio import atomic_path

INDEX_FILE = "index.json"
THUMBNAIL_PX = CELL  # the longer side of a thumbnail: a cell of the figures
LIMIT = 60  # thumbnails drawn at most (the report lists every issue)


def png_bytes(image: Any) -> bytes:
    """A Pillow image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def draw_flagged(params: Params, out_dir: Path, limit: int = LIMIT) -> dict[str, Any]:
    """Thumbnails of the accepted samples the report's issues name, with their labels, into `out_dir` (replaced
    whole); the index written."""
    paths = params.paths
    validated, yolo_dir, raw_dir = Path(paths.validated), Path(paths.yolo), Path(paths.raw)
    report = json.loads((validated / REPORT_FILE).read_text(encoding="utf-8"))
    rows = read_manifest_records(validated / MANIFEST_FILE)
    by_file = {path: row for row in rows.values() for path in (row.image, row.annotation) if path}
    codes: dict[str, list[str]] = {}  # image -> the codes naming it, in the report's order
    for issue in report.get("issues", []):
        row = by_file.get(issue.get("path", ""))
        if row is not None and issue["code"] not in codes.setdefault(row.image, []):
            codes[row.image].append(issue["code"])
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    classes = list(params.data.classes) or declared.names
    samples: list[dict[str, Any]] = []
    left_out = 0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for image, found in codes.items():
            row = rows[image]
            split = next((s for s in declared.splits if label_path(yolo_dir, s, row.id).is_file()), None)
            if split is None or len(samples) >= limit:
                left_out += 1
                continue
            label = label_path(yolo_dir, split, row.id)
            boxes = parse_labels(label.read_bytes(), label, len(classes))
            example = Example(split, row.id, row.width, row.height, row.orientation, raw_dir / image, tuple(boxes))
            drawn = _render_example(example, classes)
            if drawn is None:  # too large to decode within the figures' budget
                left_out += 1
                continue
            name = f"{len(samples):04d}.png"
            (tmp / name).write_bytes(png_bytes(drawn[0]))
            samples.append({"file": name, "image": image, "annotation": row.annotation, "split": split,
                            "codes": found})  # fmt: skip
        index = {"samples": samples, "left_out": left_out}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    return index


def draw_boxes(image_path: Path, boxes: list[dict[str, Any]], classes: list[str]) -> bytes | None:
    """`image_path` with `boxes` (`class_id`, `xyxy` in the pixels of the frame training sees) drawn and named,
    `THUMBNAIL_PX` on its longer side, as PNG bytes; None when it is too large to decode within the figures'
    budget."""
    from PIL import Image

    with pillow_unchecked(), Image.open(image_path) as opened:
        stored: tuple[int, int] = opened.size
        orientation = exif_orientation(opened)
    width, height = displayed_size(*stored, orientation)
    relative = []
    for box in boxes:
        x0, y0, x1, y1 = box["xyxy"]
        relative.append(Box(int(box["class_id"]), (x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                            (x1 - x0) / width, (y1 - y0) / height))  # fmt: skip
    drawn = _render_example(Example("", "", width, height, 1, image_path, tuple(relative)), classes)
    return None if drawn is None else png_bytes(drawn[0])
