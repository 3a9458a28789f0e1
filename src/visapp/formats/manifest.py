"""manifest.jsonl <-> `ManifestRow`s: the accepted samples, one JSON object a line (sorted keys), sorted by image.

validate writes it; convert and metadata stream it, so memory does not grow with the number of rows. A row
holds what validate measured of its sample, so that no later stage opens the image again to learn it:

- `id`: the sample's id, its label file's name (`visapp.formats.voc_ids.sample_id`);
- `image`, `annotation`: paths relative to the dataset folder (`annotation` null for a background image);
- `sha256`, `format`, `width`, `height`, `orientation`: the image's bytes hash, true format, stored size
  (before EXIF rotation) and EXIF orientation (1..8);
- `boxes_frame`: "stored" when the boxes refer to the stored pixels, "rotated" when to the EXIF-rotated frame;
- `split`: the ImageSets list that names the sample, or null (convert then splits by a hash of the bytes);
- `objects`: name, class id, the box in pixels (clipped to the image), difficult, truncated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.fsio import atomic_path

MANIFEST_FILE = "manifest.jsonl"
BOXES_FRAMES = ("stored", "rotated")


@dataclass
class ManifestObject:
    """One object of an accepted sample, as validate read it: class name and id, VOC pixel corners, flags."""

    name: str
    class_id: int  # -1 while unknown (the sample is rejected, or ids are assigned after the scan)
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False


@dataclass
class ManifestRow:
    """One accepted sample of manifest.jsonl: its image (path, hash, format, size, EXIF orientation), its annotation,
    the frame its boxes refer to, its ImageSets split (if listed) and its objects."""

    id: str
    image: str
    annotation: str | None
    sha256: str
    format: str
    width: int
    height: int
    orientation: int = 1
    boxes_frame: str = "stored"
    split: str | None = None
    objects: list[ManifestObject] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The row as plain data (what `asdict` gives, without its deep copy: a tenth of the time)."""
        return {**vars(self), "objects": [vars(obj) for obj in self.objects]}

    def to_json(self) -> str:
        """The row as one line of manifest.jsonl (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRow:
        """The row `to_dict` gave (a line of manifest.jsonl, parsed)."""
        objects = [ManifestObject(**obj) for obj in data.get("objects") or []]
        return cls(**{**data, "objects": objects})


def write_manifest(manifest_path: Path, rows: Iterable[ManifestRow]) -> None:
    """Write rows atomically, one JSON object a line, in the order given (validate sorts them by image)."""
    with atomic_path(manifest_path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(row.to_json() + "\n")


def read_manifest(manifest_path: Path) -> Iterator[tuple[int, ManifestRow]]:
    """Stream (line number, row); a missing file or a line that is not a row is a `VisError` naming the line."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise VisError(f"{manifest_path} not found: run the validate stage first (`dvc repro validate`)")
    with manifest_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = ManifestRow.from_dict(json.loads(line))
                _check(row)
            except (ValueError, TypeError, AttributeError) as exc:
                raise VisError(
                    f"{manifest_path}:{number}: not a manifest row ({exc}); rerun the validate stage"
                ) from None
            yield number, row


def _check(row: ManifestRow) -> None:
    if not 1 <= int(row.orientation) <= 8:
        raise ValueError(f"orientation {row.orientation} is not 1..8")
    if row.boxes_frame not in BOXES_FRAMES:
        raise ValueError(f"boxes_frame {row.boxes_frame!r} is not 'stored' or 'rotated'")
    if int(row.width) <= 0 or int(row.height) <= 0:
        raise ValueError(f"image size {row.width}x{row.height} is not positive")
