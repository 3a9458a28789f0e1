"""One sample's files (image, annotation: their bytes) -> its outcome: the issues, and its manifest row when
it is accepted. Every per-sample code of `visapp.formats.report.CODES` is decided here; whether an earlier
outcome can be reused is `visapp.dataset.reuse_store`, running the checks over the cores
`visapp.dataset.sample_pool`, and what needs every sample `visapp.dataset.dataset_checks`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from visapp.dataset.image_measures import ImageMeasurement, measure_image
from visapp.errors import DataError
from visapp.formats import SPLITS
from visapp.formats.image_formats import displayed_size
from visapp.formats.images import ImageInfo, inspect_image
from visapp.formats.manifest import ManifestObject, ManifestRow
from visapp.formats.report import ERROR, Issue, has_odd_bytes
from visapp.formats.voc import Annotation, box_corners, object_label, parse_annotation
from visapp.formats.voc_ids import listed_id, sample_id
from visapp.fsio import unreadable

if TYPE_CHECKING:  # types only: what decides an outcome is the code imported above (`reuse_store.OUTCOME_MODULES`)
    from visapp.config import DataConfig
    from visapp.formats.voc_image_sets import ImageSet
    from visapp.formats.voc_layout import SampleFiles

T = TypeVar("T")

_ORIENTATION_NAMES = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped",
    5: "mirrored and rotated 90° CCW",
    6: "rotated 90° CW",
    7: "mirrored and rotated 90° CW",
    8: "rotated 90° CCW",
}
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines breaks


FileDigest = tuple[str, str, str]  # (path in the dataset, its stat signature, its SHA-256 hex)


@dataclass
class SampleOutcome:
    """The outcome of checking one sample."""

    issues: list[Issue] = field(default_factory=list)
    row: ManifestRow | None = None  # set when the sample is accepted
    sha256: str | None = None  # set when the image decodes
    split: str | None = None
    measurement: ImageMeasurement | None = None  # set when the image decodes and quality checks are on
    key: str | None = None  # the outcome's key in the reuse store (when one is used)
    reused: bool = False  # the outcome came from the reuse store
    digests: list[FileDigest] = field(default_factory=list)  # its files' digests, kept for the next run

    def add(self, path: str, code: str, message: str, severity: str | None = None) -> None:
        """Add an issue (the code's own severity unless `severity` is given)."""
        self.issues.append(Issue.of(path, code, message, severity))

    @property
    def rejected(self) -> bool:
        """Whether an issue is an error: the sample is left out of the manifest."""
        return any(issue.severity == ERROR for issue in self.issues)

    def to_json(self) -> str:
        """The outcome as the reuse store keeps it (issues, row, hash, split, measurement)."""
        row = self.row.to_dict() if self.row is not None else None
        issues = [[i.path, i.code, i.severity, i.message] for i in self.issues]
        measurement = self.measurement.to_values() if self.measurement is not None else None
        return json.dumps(
            {"issues": issues, "row": row, "sha256": self.sha256, "split": self.split, "measurement": measurement}
        )

    @classmethod
    def from_json(cls, text: str) -> SampleOutcome:
        """The outcome `to_json` gave."""
        data = json.loads(text)
        row = ManifestRow.from_dict(data["row"]) if data["row"] is not None else None
        measurement = ImageMeasurement.from_values(data["measurement"]) if data["measurement"] is not None else None
        return cls([Issue(*issue) for issue in data["issues"]], row, data["sha256"], data["split"], measurement)


def _load(
    raw_dir: Path, rel: str, data: bytes | OSError, out: SampleOutcome, code: str, parse: Callable[[bytes], T]
) -> T | None:
    """Parse one file's bytes; a problem becomes an issue of the sample (`code`: the code when unreadable)."""
    if isinstance(data, OSError):
        out.add(rel, code, unreadable(data, raw_dir / rel, "the file"))
        return None
    try:
        return parse(data)
    except DataError as exc:
        out.add(rel, exc.code, exc.message)
        return None


def _frame(ann: Annotation, info: ImageInfo, rel: str, out: SampleOutcome) -> tuple[str, int, int] | None:
    """Which frame the boxes refer to, and its size, from <size> (docs/architecture.md, Conversion); None: mismatch."""
    width, height = info.width, info.height
    if ann.width is None or ann.height is None:
        out.add(rel, "size_missing", f"<size> is absent or 0; the decoded size {width}x{height} is used")
        return "stored", width, height
    if (ann.width, ann.height) == (width, height):
        return "stored", width, height
    shown = displayed_size(width, height, info.orientation)
    if (ann.width, ann.height) == shown:
        return "rotated", shown[0], shown[1]
    after = f" ({shown[0]}x{shown[1]} after EXIF orientation {info.orientation})" if shown != (width, height) else ""
    out.add(
        rel,
        "size_mismatch",
        f"<size> says {ann.width}x{ann.height} but the image decodes to {width}x{height}{after}: "
        "fix <size>, or check that this annotation belongs to this image",
    )
    return None


def _class_names(classes: list[str]) -> str:
    shown = ", ".join(classes[:10])
    return f"[{shown}{', ...' if len(classes) > 10 else ''}]"


CLASSES_HOME = "data.classes (in conf/data/; run `make params` after editing it)"


def _folded(name: str) -> str:
    return " ".join(name.split()).casefold()


def _unknown_class(name: str, classes: list[str]) -> str:
    """Why a name is not a class, with the listed name it was probably meant to be, and where the list lives."""
    near = next((known for known in classes if _folded(known) == _folded(name)), None)
    if near is not None:
        return (
            f"{name!r} is not in data.classes, but {near!r} is (they differ only in letter case or spaces): "
            f"fix the annotation, or the name in {CLASSES_HOME}"
        )
    return f"{name!r} is not in data.classes {_class_names(classes)}: add it to {CLASSES_HOME}, or fix the annotation"


def _check_objects(
    ann: Annotation, frame: tuple[str, int, int] | None, rel: str, data: DataConfig, out: SampleOutcome
) -> list[ManifestObject]:
    """Check every object; return the manifest objects (clipped), meaningful only when no error was added."""
    objects = []
    known = {name: index for index, name in enumerate(data.classes)}
    tolerance = float(data.bbox_tolerance_px)
    for index, obj in enumerate(ann.objects, 1):
        label = object_label(index, obj)
        if not obj.name:
            out.add(rel, "class_unknown", f"{label} has no <name>: add the class name")
        elif known and obj.name not in known:
            out.add(rel, "class_unknown", f"{label}: {_unknown_class(obj.name, data.classes)}")
        try:
            xmin, ymin, xmax, ymax = box_corners(obj, label)
        except DataError as exc:
            out.add(rel, exc.code, exc.message)
            continue
        if frame is None:
            continue
        name, width, height = frame
        outside = max(-xmin, -ymin, xmax - width, ymax - height)
        if outside > 0:
            where = f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) vs the {name} image {width}x{height}"
        if outside > tolerance:
            out.add(
                rel,
                "bbox_out_of_bounds",
                f"{label}: {where}, {outside:g} px outside (tolerance {tolerance:g}): fix the box",
            )
            continue
        if outside > 0:
            xmin, ymin = max(xmin, 0.0), max(ymin, 0.0)
            xmax, ymax = min(xmax, float(width)), min(ymax, float(height))
            if xmin >= xmax or ymin >= ymax:
                out.add(rel, "bbox_out_of_bounds", f"{label}: {where}, lies outside the image")
                continue
            out.add(rel, "bbox_clipped", f"{label}: {where}, {outside:g} px outside; clipped to the image")
        objects.append(
            ManifestObject(
                name=obj.name,
                class_id=known.get(obj.name, -1),  # -1: unknown (rejected), or assigned after the scan
                xmin=xmin,
                ymin=ymin,
                xmax=xmax,
                ymax=ymax,
                difficult=obj.difficult,
                truncated=obj.truncated,
            )
        )
    return objects


def _split_of(image: str, splits: dict[str, ImageSet], out: SampleOutcome) -> str | None:
    sid = listed_id(sample_id(image))
    listed = [split for split in SPLITS if split in splits and sid in splits[split].ids]
    if len(listed) > 1:
        out.add(image, "split_leak", f"id {sid!r} is listed in ImageSets/Main {' and '.join(listed)}: keep it in one")
    return listed[0] if listed else None


def _missing_partner(files: SampleFiles, ann: Annotation | None, data: DataConfig, out: SampleOutcome) -> None:
    if files.image is None and files.annotation is not None:
        named = f" or <filename> {ann.filename!r}" if ann and ann.filename else ""
        todo = files.hint or "add the image or remove the annotation"
        out.add(files.annotation, "image_missing", f"no image matches this annotation by name{named}: {todo}")
    if files.annotation is None and files.image is not None:
        if files.hint:
            out.add(files.image, "annotation_missing", f"no annotation paired: {files.hint}", severity=ERROR)
        elif data.allow_background:
            out.add(files.image, "annotation_missing", "no annotation: kept as a background image (no objects)")
        else:
            out.add(
                files.image,
                "annotation_missing",
                "no annotation, and data.allow_background is false: add an annotation or remove the image",
                severity=ERROR,
            )


def _odd_names(files: SampleFiles, out: SampleOutcome) -> None:
    """A file name that is not UTF-8 rejects its sample: no UTF-8 file (manifest, labels, lists) can name it."""
    for rel in filter(None, (files.image, files.annotation, *files.rivals)):
        if has_odd_bytes(rel):
            name = rel.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")
            out.add(
                rel,
                "name_not_utf8",
                f"the file name is not UTF-8 (in Windows-1252 it would read {name.decode('cp1252', 'replace')!r}), "
                "and neither DVC nor the label files can hold it: rename it, e.g. "
                "`convmv -f cp1252 -t utf-8 -r --notest <dataset folder>` (or the code page it was written in)",
            )


def _rivals(files: SampleFiles, out: SampleOutcome) -> None:
    if files.image and files.rivals:
        claims = ", ".join([files.annotation or "", *files.rivals])
        message = f"{len(files.rivals) + 1} annotations claim this image ({claims}): keep one (merge their objects)"
        out.add(files.image, "annotation_conflict", message)
        for rival in files.rivals:
            message = f"claims {files.image} (by name or <filename>), as {files.annotation} does: keep one"
            out.add(rival, "annotation_conflict", message)


def evaluate_sample(
    raw_dir: Path,
    files: SampleFiles,
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflict: str | None,
    image_bytes: bytes | OSError | None,
    xml_bytes: bytes | OSError | None,
    measure: bool = False,
    image_sha256: str | None = None,
) -> SampleOutcome:
    """Check one sample (its image, its annotation, or both) from its files' bytes, which the caller read.

    Args:
        raw_dir: the dataset folder; the paths of `files` are relative to it.
        files: the sample's image and annotation.
        data: the params that decide what is an error (classes, tolerances, background images, pixel limit).
        splits: the ImageSets lists, by split.
        conflict: the image that shares this one's id (`id_conflict`), else None.
        image_bytes: the image's bytes, the error that reading it raised, or None when not read.
        xml_bytes: the annotation's, likewise.
        measure: also measure the image for the quality checks (`SampleOutcome.measurement`).
        image_sha256: the SHA-256 of `image_bytes`.

    Returns:
        Its issues; its manifest row when it is accepted.
    """
    out = SampleOutcome()
    _odd_names(files, out)
    _rivals(files, out)
    ann = None
    if files.annotation and xml_bytes is not None:
        ann = _load(raw_dir, files.annotation, xml_bytes, out, "xml_malformed", parse_annotation)
    info = None
    if files.image and image_bytes is not None:
        info = _load(
            raw_dir,
            files.image,
            image_bytes,
            out,
            "image_unreadable",
            lambda blob: inspect_image(blob, data.max_image_pixels, keep_pixels=measure),
        )
        out.sha256 = image_sha256 if info else None
        if info is not None and info.trailing_bytes:
            out.add(
                files.image,
                "image_trailing_data",
                f"the {info.format.upper()} image is complete, followed by {info.trailing_bytes:,} more bytes "
                "(padding, or a camera or phone trailer): kept; training reads a copy, so data/raw is never rewritten",
            )
        if info is not None and info.pixels is not None:
            # Measured from the decode the check just made: the image is never decoded a second time.
            out.measurement = measure_image(info.pixels, displayed_size(info.width, info.height, info.orientation))
    _missing_partner(files, ann, data, out)
    frame = _frame(ann, info, files.annotation or "", out) if ann and info else None
    objects = _check_objects(ann, frame, files.annotation or "", data, out) if ann else []
    if files.image is None:
        return out
    if info is not None and info.orientation != 1:
        shown = _ORIENTATION_NAMES[info.orientation]
        boxes = f"; its boxes refer to the {frame[0]} frame (<size>)" if frame else ""
        out.add(files.image, "exif_rotated", f"EXIF orientation {info.orientation} ({shown} on display){boxes}")
    if _LINE_BREAK.search(files.image):
        out.add(
            files.image,
            "image_unreadable",
            f"the path {files.image!r} holds a line break, and the YOLO split lists name one image a line: "
            "rename the file",
        )
    if conflict is not None:
        out.add(
            files.image,
            "id_conflict",
            f"{files.image} and {conflict} share the id {sample_id(conflict)!r} (same name without extension), "
            "so their label files would collide: rename one",
        )
    out.split = _split_of(files.image, splits, out)
    if info is not None and not out.rejected:
        out.row = ManifestRow(
            id=sample_id(files.image),
            image=files.image,
            annotation=files.annotation,
            sha256=out.sha256 or "",
            format=info.format,
            width=info.width,
            height=info.height,
            orientation=info.orientation,
            boxes_frame=frame[0] if frame else "stored",
            split=out.split,
            objects=objects,
        )
    return out
