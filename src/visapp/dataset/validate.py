"""A VOC folder (data/raw) -> report.json (counts + every issue) and manifest.jsonl (the accepted samples).

Samples are checked one at a time, each file read once (an annotation matched by `<filename>` twice): only
the manifest rows, the issues, a map from image SHA-256 to the first image with those bytes and, with the
quality checks on, three numbers per image (`visapp.dataset.quality`) stay in memory, never image bytes or
parsed XML. The codes are those of `visapp.formats.report.CODES`.

Choices made where a rule could go either way:

- an issue's `path` is the file the problem is in: the annotation for XML, size, class and box problems and
  for `image_missing`; the image for image problems, `exif_rotated`, `duplicate_image`, `split_leak`,
  `annotation_missing` and `id_conflict`;
- `id_conflict`: two images share a sample id (`a.jpg` and `a.png` in one folder), so their label files would
  collide; the one with an annotation (else the first) keeps the id;
- `split_leak`: an id listed in two ImageSets lists, or byte-identical images listed in different lists;
  every sample involved is rejected. An unlisted copy of a listed image gets its twin's split in the
  manifest, so that identical bytes never straddle splits;
- `duplicate_image` is a warning on each later copy, naming the first; unreadable images are not compared;
- `warnings` in report.json counts warning issues;
- an image whose path holds a line break (anything `str.splitlines` breaks at) is `image_unreadable`: the
  YOLO split lists name one image a line, so nothing downstream (metadata, dataset views, Ultralytics) could
  find it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from visapp.config import DataConfig, OnError
from visapp.dataset import pool
from visapp.dataset.quality import ImageMeasurement, QualityRules, check_dataset, measure_image
from visapp.errors import DataError, VisError
from visapp.formats import SPLITS
from visapp.formats.images import ImageInfo, displayed_size, inspect_image
from visapp.formats.manifest import MANIFEST_FILE, ManifestObject, ManifestRow, write_manifest
from visapp.formats.report import ERROR, REPORT_FILE, Issue, build_report, has_errors, has_odd_bytes, printable
from visapp.formats.voc import BOX_KEYS, Annotation, parse_annotation
from visapp.formats.voc_ids import listed_id, sample_id
from visapp.formats.voc_image_sets import ImageSet, read_image_sets
from visapp.formats.voc_layout import ANNOTATION_DIRS, SampleFiles, discover_samples
from visapp.fsio import unreadable, write_json
from visapp.progress import Counter, ProgressCallback

log = logging.getLogger(__name__)
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


@dataclass
class ValidationResult:
    """report: report.json's content; rows: manifest.jsonl's rows (accepted samples, sorted by image)."""

    report: dict[str, Any]
    rows: list[ManifestRow] = field(default_factory=list)


# ---------------------------------------------------------------- one sample


@dataclass
class _Sample:
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
        self.issues.append(Issue.of(path, code, message, severity))

    @property
    def rejected(self) -> bool:
        return any(issue.severity == ERROR for issue in self.issues)

    def to_json(self) -> str:
        row = self.row.to_dict() if self.row is not None else None
        issues = [[i.path, i.code, i.severity, i.message] for i in self.issues]
        measurement = self.measurement.to_list() if self.measurement is not None else None
        return json.dumps(
            {"issues": issues, "row": row, "sha256": self.sha256, "split": self.split, "measurement": measurement}
        )

    @classmethod
    def from_json(cls, text: str) -> _Sample:
        data = json.loads(text)
        row = ManifestRow.from_dict(data["row"]) if data["row"] is not None else None
        measurement = ImageMeasurement.from_list(data["measurement"]) if data["measurement"] is not None else None
        return cls([Issue(*issue) for issue in data["issues"]], row, data["sha256"], data["split"], measurement)


# What decides a sample's outcome besides its bytes: bump when a check changes what it reports.
VALIDATOR_VERSION = "2026.12.3"


def outcome_key(
    files: SampleFiles,
    data: DataConfig,
    listed: list[str],
    conflict: str | None,
    image_sha256: str | None,
    xml_sha256: str | None,
    measure: bool = False,
) -> str:
    """Everything a sample's outcome depends on, hashed: the validator's version, the data params, the paths,
    the ImageSets lists naming it, its id conflict, whether its image is measured for the quality checks, and
    the content of its image and annotation (their SHA-256, hex)."""
    digest = hashlib.sha256()
    head = [VALIDATOR_VERSION, _params_json(data), _files_json(files), listed, conflict, measure, image_sha256]
    digest.update(json.dumps(head).encode("utf-8", "surrogateescape"))
    digest.update(b"\0" if xml_sha256 is None else bytes.fromhex(xml_sha256))
    return digest.hexdigest()


def _files_json(files: SampleFiles) -> str:
    return json.dumps([files.image, files.annotation, files.rivals, files.hint])


def _listed(files: SampleFiles, splits: dict[str, ImageSet]) -> list[str]:
    """The ImageSets lists that name the sample's image."""
    return [split for split in SPLITS if files.image and split in splits and _in(files.image, splits[split])]


_params_seen: tuple[DataConfig, str] | None = None


def _params_json(data: DataConfig) -> str:
    """The data params as JSON: the same for every sample of a run, so made once per process, not per sample."""
    global _params_seen
    if _params_seen is None or _params_seen[0] is not data:
        _params_seen = (data, json.dumps(asdict(data), sort_keys=True, default=str))
    return _params_seen[1]


FileDigest = tuple[str, str, str]  # (path in the dataset, its stat signature, its SHA-256 hex)
# A file changed this recently may change again within its timestamps' granularity without them showing it.
_SETTLED_NS = 2_000_000_000


def _signature(stat: os.stat_result) -> str | None:
    """What tells a file unchanged since its digest was taken, as git's and DVC's caches do: device, inode,
    size, modification and change times (a change time cannot be set back). None for a file changed in the
    last 2 s, whose digest is not kept: a second change within the timestamps' granularity would not show."""
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < _SETTLED_NS:
        return None
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _file_digests(
    files: SampleFiles, image: tuple[str | None, str | None] | None, xml: tuple[str | None, str | None] | None
) -> list[FileDigest]:
    """The digests a sample's files leave for the next run: (path, signature, SHA-256) of each file that has
    both (`image`, `xml`: (signature, SHA-256) or None)."""
    return [
        (rel, signature, sha)
        for rel, (signature, sha) in ((files.image, image or (None, None)), (files.annotation, xml or (None, None)))
        if rel and signature and sha
    ]


class Reuse:
    """Outcomes of earlier runs by `outcome_key`, in `folder/outcomes.sqlite`: safe to delete at any time.

    The store also keeps each file's SHA-256 with its stat signature (`_signature`), so that the main process
    finds an unchanged sample's outcome without reading its files (`lookup`), before the pool starts. The pool
    reads the other samples' files and looks their outcome up by content (`get`): a file whose stat changed but
    whose bytes did not (a fresh `dvc checkout` relinks every file) is read and hashed, not checked again.
    Each process opens its own connection; the main process writes once a run is done. After a run the store
    keeps only that run's outcomes and files, so it does not grow with every dataset version.
    """

    FILE = "outcomes.sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._db: Any = None
        self._pid = 0
        self._keys: set[str] = set()
        self._digests: dict[str, tuple[str, str]] | None = None  # path -> (stat signature, SHA-256)
        self._outcomes: dict[str, str] | None = None  # key -> outcome (JSON), for `lookup`

    def _connect(self) -> Any:
        import sqlite3

        if self._db is None or self._pid != os.getpid():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.folder / self.FILE, timeout=60)
            self._db.execute("CREATE TABLE IF NOT EXISTS outcomes (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL)"
            )
            self._pid = os.getpid()
            # Every key, read once: most lookups of a run that checks new files miss, and a miss then costs no query.
            self._keys = {row[0] for row in self._db.execute("SELECT key FROM outcomes")}
        return self._db

    def get(self, key: str) -> _Sample | None:
        """The stored outcome of a key, None when there is none."""
        import sqlite3

        try:
            db = self._connect()
            if key not in self._keys:
                return None
            found = db.execute("SELECT value FROM outcomes WHERE key = ?", (key,)).fetchone()
            return _Sample.from_json(found[0]) if found else None
        except (sqlite3.Error, ValueError, TypeError, KeyError):  # a damaged store is only a slower run
            return None

    def _digest(self, raw_dir: Path, rel: str, digests: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
        """(stat signature, SHA-256) of the file as kept, when its signature is unchanged."""
        kept = digests.get(rel)
        if kept is None:
            return None
        try:
            signature = _signature(os.stat(f"{raw_dir}/{rel}"))  # noqa: PTH116  per file: no Path built
        except OSError:
            return None
        return kept if signature == kept[0] else None

    def lookup(
        self,
        raw_dir: Path,
        files: SampleFiles,
        data: DataConfig,
        splits: dict[str, ImageSet],
        conflict: str | None,
        measure: bool,
    ) -> _Sample | None:
        """The earlier outcome of a sample whose files are unchanged (by their stat signatures) and whose key
        is stored; None: it is checked."""
        import sqlite3

        try:
            if self._digests is None or self._outcomes is None:
                # Read at once: most samples are looked up, and one query each would cost more.
                db = self._connect()
                self._digests = {path: (stat, sha) for path, stat, sha in db.execute("SELECT * FROM files")}
                self._outcomes = dict(db.execute("SELECT key, value FROM outcomes"))
        except sqlite3.Error:  # a damaged store is only a slower run
            return None
        image = self._digest(raw_dir, files.image, self._digests) if files.image else None
        xml = self._digest(raw_dir, files.annotation, self._digests) if files.annotation else None
        if (files.image and image is None) or (files.annotation and xml is None):
            return None
        image_sha256, xml_sha256 = image[1] if image else None, xml[1] if xml else None
        key = outcome_key(files, data, _listed(files, splits), conflict, image_sha256, xml_sha256, measure)
        if key not in self._outcomes:
            return None
        try:
            earlier = _Sample.from_json(self._outcomes[key])
        except (ValueError, TypeError, KeyError):  # a damaged outcome: the sample is checked again
            return None
        earlier.key, earlier.reused, earlier.digests = key, True, _file_digests(files, image, xml)
        return earlier

    def keep(self, outcomes: dict[str, str], used: set[str], digests: list[FileDigest]) -> None:
        """Store this run's new outcomes and files' digests; forget outcomes of keys this run did not use and
        files it did not read."""
        import sqlite3

        try:
            db = self._connect()
            with db:
                db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?)", list(outcomes.items()))
                db.execute("CREATE TEMP TABLE IF NOT EXISTS used (key TEXT PRIMARY KEY)")
                db.execute("DELETE FROM used")
                db.executemany("INSERT OR IGNORE INTO used VALUES (?)", [(k,) for k in used])
                db.execute("DELETE FROM outcomes WHERE key NOT IN (SELECT key FROM used)")
                db.execute("DELETE FROM files")
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", digests)
        except sqlite3.Error as exc:
            log.warning(
                "could not keep validation outcomes for reuse in %s (%s); the next run checks everything",
                self.folder,
                exc,
            )


def _read(raw_dir: Path, rel: str) -> tuple[bytes | OSError, str | None]:
    """A file's bytes (or why it cannot be read) and its stat signature, taken before it is read."""
    try:
        with open(f"{raw_dir}/{rel}", "rb") as handle:  # noqa: PTH123  per file: no Path built
            signature = _signature(os.fstat(handle.fileno()))
            return handle.read(), signature
    except OSError as exc:
        return exc, None


def _load(
    raw_dir: Path, rel: str, data: bytes | OSError, out: _Sample, code: str, parse: Callable[[bytes], T]
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


def _frame(ann: Annotation, info: ImageInfo, rel: str, out: _Sample) -> tuple[str, int, int] | None:
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
    ann: Annotation, frame: tuple[str, int, int] | None, rel: str, data: DataConfig, out: _Sample
) -> list[ManifestObject]:
    """Check every object; return the manifest objects (clipped), meaningful only when no error was added."""
    objects = []
    known = {name: index for index, name in enumerate(data.classes)}
    tolerance = float(data.bbox_tolerance_px)
    for index, obj in enumerate(ann.objects, 1):
        label = f"object {index} ({obj.name})" if obj.name else f"object {index}"
        if not obj.name:
            out.add(rel, "class_unknown", f"{label} has no <name>: add the class name")
        elif known and obj.name not in known:
            out.add(rel, "class_unknown", f"{label}: {_unknown_class(obj.name, data.classes)}")
        box = obj.bndbox
        missing = [key for key in BOX_KEYS if key not in box]
        if len(missing) == len(BOX_KEYS):
            out.add(rel, "bbox_invalid", f"{label} has no <bndbox> coordinates")
            continue
        if missing:
            out.add(rel, "bbox_invalid", f"{label}: <bndbox> lacks {', '.join(f'<{k}>' for k in missing)}")
            continue
        bad = [f"<{key}> {box[key]!r}" for key in BOX_KEYS if isinstance(box[key], str)]
        if bad:
            out.add(rel, "bbox_invalid", f"{label}: not a number: {', '.join(bad)}")
            continue
        xmin, ymin, xmax, ymax = (float(box[key]) for key in BOX_KEYS)
        if xmin >= xmax or ymin >= ymax:
            out.add(rel, "bbox_invalid", f"{label}: empty box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}); need min < max")
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


def _split_of(image: str, splits: dict[str, ImageSet], out: _Sample) -> str | None:
    sid = listed_id(sample_id(image))
    listed = [split for split in SPLITS if split in splits and sid in splits[split].ids]
    if len(listed) > 1:
        out.add(image, "split_leak", f"id {sid!r} is listed in ImageSets/Main {' and '.join(listed)}: keep it in one")
    return listed[0] if listed else None


def _missing_partner(files: SampleFiles, ann: Annotation | None, data: DataConfig, out: _Sample) -> None:
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


def _odd_names(files: SampleFiles, out: _Sample) -> None:
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


def _rivals(files: SampleFiles, out: _Sample) -> None:
    if files.image and files.rivals:
        claims = ", ".join([files.annotation or "", *files.rivals])
        message = f"{len(files.rivals) + 1} annotations claim this image ({claims}): keep one (merge their objects)"
        out.add(files.image, "annotation_conflict", message)
        for rival in files.rivals:
            message = f"claims {files.image} (by name or <filename>), as {files.annotation} does: keep one"
            out.add(rival, "annotation_conflict", message)


def _check_sample(
    raw_dir: Path,
    files: SampleFiles,
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflict: str | None,
    reuse: Reuse | None = None,
    measure: bool = False,
) -> _Sample:
    """One sample's outcome: from `reuse` when an earlier run checked the same bytes under the same rules.
    `measure`: also measure the image for the quality checks (`_Sample.measurement`)."""
    xml, xml_signature = _read(raw_dir, files.annotation) if files.annotation else (None, None)
    image, image_signature = _read(raw_dir, files.image) if files.image else (None, None)
    image_sha256 = hashlib.sha256(image).hexdigest() if isinstance(image, bytes) else None
    key, digests = None, []
    if reuse is not None and not isinstance(xml, OSError) and not isinstance(image, OSError):
        xml_sha256 = hashlib.sha256(xml).hexdigest() if xml is not None else None
        key = outcome_key(files, data, _listed(files, splits), conflict, image_sha256, xml_sha256, measure)
        digests = _file_digests(files, (image_signature, image_sha256), (xml_signature, xml_sha256))
        earlier = reuse.get(key)
        if earlier is not None:
            earlier.key, earlier.reused, earlier.digests = key, True, digests
            return earlier
    out = _evaluate(raw_dir, files, data, splits, conflict, image, xml, measure, image_sha256)
    out.key, out.digests = key, digests
    return out


def _in(image: str, image_set: ImageSet) -> bool:
    return listed_id(sample_id(image)) in image_set.ids


def _evaluate(
    raw_dir: Path,
    files: SampleFiles,
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflict: str | None,
    image_bytes: bytes | OSError | None,
    xml_bytes: bytes | OSError | None,
    measure: bool = False,
    image_sha256: str | None = None,
) -> _Sample:
    out = _Sample()
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


# ---------------------------------------------------------------- the dataset


def _id_conflicts(samples: list[SampleFiles]) -> dict[str, str]:
    """image -> the image that keeps the shared id; the annotated one (else the first) keeps it."""
    by_id: dict[str, list[SampleFiles]] = {}
    for files in samples:
        if files.image:
            by_id.setdefault(sample_id(files.image), []).append(files)
    conflicts = {}
    for group in by_id.values():
        if len(group) > 1:
            keeper = next((files for files in group if files.annotation), group[0])
            conflicts.update({files.image: keeper.image for files in group if files is not keeper})
    return conflicts  # type: ignore[return-value]


def _annotation_id(rel: str) -> str:
    """The id an annotation would give its sample: its path without the annotation folder and extension."""
    head, _, rest = rel.partition("/")
    return sample_id(rest if rest and head.lower() in ANNOTATION_DIRS else rel)


def _unknown_listed_ids(samples: list[SampleFiles], splits: dict[str, ImageSet]) -> list[Issue]:
    """imageset_unknown: each id a list names that no image and no annotation has."""
    known = {listed_id(sample_id(files.image)) for files in samples if files.image}
    known |= {listed_id(_annotation_id(files.annotation)) for files in samples if files.annotation}
    return [
        Issue.of(
            image_set.path,
            "imageset_unknown",
            f"lists {ident!r}, which matches no image or annotation: remove it from the list, or add the sample",
        )
        for image_set in splits.values()
        for ident in sorted(image_set.ids - known)
    ]


def _nothing_accepted(raw_dir: Path, samples: int, issues: list[Issue]) -> str:
    """dataset_empty's message: why there is nothing to train on, the most common reasons first."""
    if samples:
        counts = Tally(issue.code for issue in issues if issue.severity == ERROR)
        reasons = ", ".join(f"{code} ({n})" for code, n in counts.most_common(3))
        return (
            f"none of the {samples} samples was accepted; the most common errors: {reasons}: fix them "
            "(every issue is listed in the report), then validate again"
        )
    others: Tally[str] = Tally()
    for path in raw_dir.rglob("*"):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(raw_dir).parts):
            others[path.suffix.lower() or "(no extension)"] += 1
    found = (
        f"it holds {sum(others.values())} other files ({', '.join(f'{s} {n}' for s, n in others.most_common(4))})"
        if others
        else "it holds no files (hidden ones aside)"
    )
    return (
        f"no images or annotations found in {printable(str(raw_dir))}: {found}. A VOC dataset is Annotations/*.xml "
        "beside JPEGImages/ (or images/), or each XML beside its image; images are .jpg, .png, .bmp or .webp. An "
        "archive must be unpacked first (`visapp ingest <archive>` does it)"
    )


# ---------------------------------------------------------------- checking samples in parallel

MIN_SAMPLES_PER_WORKER = 64  # below this, starting processes costs more than it saves
# A pool worker's arguments.
_context: tuple[Path, DataConfig, dict[str, ImageSet], Reuse | None, bool] | None = None


def worker_count(samples: int, environ: dict[str, str] | None = None) -> int:
    """How many processes check samples: `$VISAPP_WORKERS`, else one per core, never more than the samples
    justify (1: check in this process)."""
    return max(1, min(pool.cores(environ), samples // MIN_SAMPLES_PER_WORKER))


def _start_worker(
    raw_dir: Path, data: DataConfig, splits: dict[str, ImageSet], reuse_dir: Path | None, measure: bool
) -> None:
    global _context
    gc.enable()  # a forked worker inherits the parent's pause (`_cycle_collection_paused`): its samples are its own
    _context = (raw_dir, data, splits, Reuse(reuse_dir) if reuse_dir else None, measure)


def _check_in_worker(task: tuple[SampleFiles, str | None]) -> _Sample:
    assert _context is not None
    raw_dir, data, splits, reuse, measure = _context
    return _check_sample(raw_dir, task[0], data, splits, task[1], reuse, measure)


def _check_all(
    raw_dir: Path,
    samples: list[SampleFiles],
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflicts: dict[str, str],
    reuse: Reuse | None,
    measure: bool = False,
) -> Iterator[_Sample]:
    """Each sample's outcome, in the order of `samples`: from `reuse` when its files are unchanged, else
    checked, in a process pool over the cores when it pays.

    Samples are independent (each reads only its own files), and `map` keeps their order, so the outputs are
    the same as checking them one by one here. The workers start as `visapp.dataset.pool` says.
    """
    tasks = [(files, conflicts.get(files.image or "")) for files in samples]
    earlier: dict[int, _Sample] = {}
    if reuse is not None:
        for index, (files, conflict) in enumerate(tasks):
            found = reuse.lookup(raw_dir, files, data, splits, conflict, measure)
            if found is not None:
                earlier[index] = found
    checked = _check_tasks(raw_dir, [t for i, t in enumerate(tasks) if i not in earlier], data, splits, reuse, measure)
    for index in range(len(tasks)):
        yield earlier[index] if index in earlier else next(checked)


def _check_tasks(
    raw_dir: Path,
    tasks: list[tuple[SampleFiles, str | None]],
    data: DataConfig,
    splits: dict[str, ImageSet],
    reuse: Reuse | None,
    measure: bool,
) -> Iterator[_Sample]:
    workers = worker_count(len(tasks))
    if workers == 1:
        for files, conflict in tasks:
            yield _check_sample(raw_dir, files, data, splits, conflict, reuse, measure)
        return
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(32, len(tasks) // (workers * 16)))
    with ProcessPoolExecutor(
        workers,
        mp_context=pool.context(pool.can_fork()),
        initializer=_start_worker,
        initargs=(raw_dir, data, splits, reuse.folder if reuse else None, measure),
    ) as executor:
        yield from executor.map(_check_in_worker, tasks, chunksize=chunk)


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector paused: the main process gathers one manifest row and a few issues per sample,
    none in a reference cycle, and each full collection would walk all of them again (about 5% of a 20,000-image
    validation). Whatever cycles arise meanwhile are collected once it resumes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_cycle_collection_paused()
def validate_dataset(
    raw_dir: Path,
    data: DataConfig,
    progress: ProgressCallback | None = None,
    reuse_dir: Path | None = None,
    quality: QualityRules | None = None,
) -> ValidationResult:
    """Check every sample of a VOC folder against the issue codes of `visapp.formats.report`.

    Args:
        raw_dir: the dataset folder (any layout of `visapp.formats.voc_layout`).
        data: classes (empty: every name is accepted, class ids follow the sorted names found),
            allow_background, bbox_tolerance_px.
        progress: told after each sample (task "validate").
        reuse_dir: where outcomes of earlier runs are kept (`Reuse`); a sample whose bytes, paths, lists and
            params are unchanged is not checked again. None: check everything, keep nothing.
        quality: the dataset-quality checks' rules (`visapp.dataset.quality`): each image is measured in the
            pass over the samples, and the findings (warnings) join the report. None: no quality checks.

    Returns:
        report.json's content and the accepted samples' manifest rows (sorted by image path).

    Raises:
        VisError: raw_dir is not a folder. Nothing in the dataset makes this raise.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise VisError(f"{raw_dir} is not a folder: give the folder that holds the VOC dataset")
    problems: list[tuple[str, str]] = []
    samples = discover_samples(raw_dir, problems)
    splits = read_image_sets(raw_dir, problems)
    conflicts = _id_conflicts(samples)

    issues: list[Issue] = [Issue.of(path, "path_unreadable", message) for path, message in problems]
    issues += _unknown_listed_ids(samples, splits)
    rows: dict[str, ManifestRow] = {}  # image -> manifest row
    rejected: set[str] = set()
    first_by_sha: dict[str, tuple[str, str | None]] = {}  # sha256 -> (first image, its split)
    twins: dict[str, list[tuple[str, str | None]]] = {}  # sha256 -> every (image, split); duplicates only
    counter = Counter(progress, "validate", len(samples), "samples")
    fresh: dict[str, str] = {}  # new outcomes, serialised before the dataset-level passes add to them
    used: set[str] = set()
    measure = quality is not None and quality.measures
    measurements: dict[str, ImageMeasurement] = {}  # image -> its measurement, for the quality checks
    digests: list[FileDigest] = []  # every file read or known unchanged, for the next run
    reuse = Reuse(reuse_dir) if reuse_dir is not None else None
    outcomes = _check_all(raw_dir, samples, data, splits, conflicts, reuse, measure)
    for files, out in zip(samples, outcomes, strict=True):
        key = files.image or files.annotation or ""
        if out.key is not None:
            used.add(out.key)
            digests += out.digests
            if not out.reused:
                fresh[out.key] = out.to_json()
        if out.sha256 is not None:
            first = first_by_sha.setdefault(out.sha256, (key, out.split))
            if first[0] != key:
                twins.setdefault(out.sha256, [first]).append((key, out.split))
                out.add(key, "duplicate_image", f"byte-identical to {first[0]}: remove one of the two")
        issues.extend(out.issues)
        if out.row is None:
            rejected.add(key)
        else:
            rows[key] = out.row
            if out.measurement is not None:
                measurements[key] = out.measurement
        counter.advance()

    for members in twins.values():
        listed = sorted({split for _, split in members if split})
        if len(listed) > 1:
            names = ", ".join(f"{image} ({split or 'not listed'})" for image, split in members)
            for image, _ in members:
                issues.append(Issue.of(image, "split_leak", f"identical images in different splits: {names}"))
                rejected.add(image)
                rows.pop(image, None)
        elif listed:  # an unlisted copy follows its listed twin, so that identical bytes share a split
            for image, _ in members:
                if image in rows:
                    rows[image].split = listed[0]

    if reuse is not None:
        reuse.keep(fresh, used, digests)
        log.info(
            "validate: %d of %d samples unchanged since the last run (outcomes reused)",
            len(used) - len(fresh),
            len(samples),
        )
    manifest = [rows[image] for image in sorted(rows)]
    seen = {obj.name for row in manifest for obj in row.objects}
    for name in data.classes:
        if name not in seen:
            issues.append(
                Issue.of(
                    ".",
                    "class_absent",
                    f"data.classes lists {name!r}, but no accepted sample has an object of it: training cannot "
                    f"learn it; remove it from {CLASSES_HOME}, or add samples of it",
                )
            )
    if not manifest:
        issues.append(Issue.of(".", "dataset_empty", _nothing_accepted(raw_dir, len(samples), issues)))
    if not data.classes:
        names = sorted({obj.name for row in manifest for obj in row.objects})
        ids = {name: index for index, name in enumerate(names)}
        for row in manifest:
            for obj in row.objects:
                obj.class_id = ids[obj.name]
    if quality is not None:
        issues += check_dataset(manifest, measurements, data, quality)
    return ValidationResult(report=build_report(len(samples), len(rejected), issues), rows=manifest)


# ---------------------------------------------------------------- outputs


def write_validation(result: ValidationResult, out_dir: Path, on_error: OnError) -> None:
    """Write out_dir/report.json always, and out_dir/manifest.jsonl unless on_error=fail rejected samples
    (then a stale manifest is removed, so that nothing downstream reads it)."""
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_FILE, result.report)
    manifest = out_dir / MANIFEST_FILE
    if OnError(on_error) == OnError.fail and has_errors(result.report):
        manifest.unlink(missing_ok=True)
        return
    write_manifest(manifest, result.rows)
