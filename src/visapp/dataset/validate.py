"""A VOC folder (data/raw) -> report.json (counts + every issue) and manifest.jsonl (the accepted samples).

Samples are checked one at a time, each file read once (an annotation matched by `<filename>` twice): only
the manifest rows, the issues, a map from image SHA-256 to the first image with those bytes and, with the
quality checks on, three numbers per image (`visapp.dataset.quality`) stay in memory, never image bytes or
parsed XML. The codes are those of `visapp.formats.report.CODES`.

This module puts the parts together, each in a module of its own: one sample's checks
(`visapp.dataset.sample_checks`), earlier outcomes kept for reuse (`visapp.dataset.reuse_store`), the checks
run over the cores (`visapp.dataset.sample_pool`), what needs every sample (`visapp.dataset.dataset_checks`),
and the quality findings (`visapp.dataset.quality`).

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
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from visapp.config import DataConfig, OnError, Params
from visapp.dataset.dataset_checks import (
    ByteTwins,
    absent_classes,
    id_conflicts,
    nothing_accepted,
    number_classes_found,
    unknown_listed_ids,
)
from visapp.dataset.image_measures import ImageMeasurement
from visapp.dataset.quality import QualityRules, check_dataset
from visapp.dataset.reuse_store import Reuse
from visapp.dataset.sample_checks import FileDigest
from visapp.dataset.sample_pool import check_all
from visapp.errors import VisError
from visapp.formats.dvcfile import SOURCE_FILE, source_record
from visapp.formats.manifest import MANIFEST_FILE, ManifestRow, write_manifest
from visapp.formats.report import REPORT_FILE, Issue, Report, build_report, has_errors
from visapp.formats.voc_image_sets import read_image_sets
from visapp.formats.voc_layout import discover_samples
from visapp.fsio import write_json
from visapp.progress import Counter, ProgressCallback

log = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """report: report.json's content; rows: manifest.jsonl's rows (accepted samples, sorted by image)."""

    report: Report
    rows: list[ManifestRow] = field(default_factory=list)

    def stop_reason(self, on_error: OnError) -> str | None:
        """Why the pipeline stops after validate: "dataset_empty" (nothing accepted), "rejected" (samples
        rejected and `on_error` is fail), or None: it goes on (with `skip`, without the rejected samples)."""
        if not self.rows:
            return "dataset_empty"
        if has_errors(self.report) and OnError(on_error) == OnError.fail:
            return "rejected"
        return None


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
    conflicts = id_conflicts(samples)

    issues: list[Issue] = [Issue.of(path, "path_unreadable", message) for path, message in problems]
    issues += unknown_listed_ids(samples, splits)
    rows: dict[str, ManifestRow] = {}  # image -> manifest row
    rejected: set[str] = set()
    twins = ByteTwins()
    counter = Counter(progress, "validate", len(samples), "samples")
    fresh: dict[str, str] = {}  # new outcomes, serialised before the dataset-level passes add to them
    used: set[str] = set()
    measure = quality is not None and quality.measures
    measurements: dict[str, ImageMeasurement] = {}  # image -> its measurement, for the quality checks
    digests: list[FileDigest] = []  # every file read or known unchanged, for the next run
    reuse = Reuse(reuse_dir) if reuse_dir is not None else None
    outcomes = check_all(raw_dir, samples, data, splits, conflicts, reuse, measure)
    for files, out in zip(samples, outcomes, strict=True):
        key = files.image or files.annotation or ""
        if out.key is not None:
            used.add(out.key)
            digests += out.digests
            if not out.reused:
                fresh[out.key] = out.to_json()
        first = twins.first_of(key, out.sha256, out.split) if out.sha256 is not None else None
        if first is not None:
            out.add(key, "duplicate_image", f"byte-identical to {first}: remove one of the two")
        issues.extend(out.issues)
        if out.row is None:
            rejected.add(key)
        else:
            rows[key] = out.row
            if out.measurement is not None:
                measurements[key] = out.measurement
        counter.advance()

    issues += twins.settle_splits(rows, rejected)

    if reuse is not None:
        reuse.keep(fresh, used, digests)
        log.info(
            "validate: %d of %d samples unchanged since the last run (outcomes reused)",
            len(used) - len(fresh),
            len(samples),
        )
    manifest = [rows[image] for image in sorted(rows)]
    issues += absent_classes(data.classes, manifest)
    if not manifest:
        issues.append(Issue.of(".", "dataset_empty", nothing_accepted(raw_dir, len(samples), issues)))
    if not data.classes:
        number_classes_found(manifest)
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


def run_validate(
    params: Params, progress: ProgressCallback | None = None, reuse_dir: Path | None = None
) -> ValidationResult:
    """The validate stage: `paths.raw` -> report.json (always), manifest.jsonl and source.json in `paths.validated`,
    with the quality checks of `params` and the outcomes of earlier runs in `reuse_dir` (None: check everything)."""
    result = validate_dataset(
        Path(params.paths.raw), params.data, progress=progress, reuse_dir=reuse_dir,
        quality=QualityRules.from_params(params),
    )  # fmt: skip
    write_validation(result, Path(params.paths.validated), on_error=params.data.on_error)
    # The later stages depend on the manifest, not on data/raw: this names the version of data/raw they describe.
    write_json(Path(params.paths.validated) / SOURCE_FILE, source_record(Path(params.paths.raw)))
    return result
