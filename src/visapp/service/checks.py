"""The check of an upload: the stored archive -> the pipeline's data stages -> the job's report and metadata (and
thumbnails of the samples the report names, for the job's page).

The archive is unpacked through the ingest's checks (`visapp.ingest.sources`: paths, links, sizes, ratios, entry
counts, the dataset's folder found inside), then `run_data_stages` runs on it with the job's params: the same
function, quality rules and reuse of earlier outcomes as `dvc repro`, so the report and the metadata are the
pipeline's. Whoever runs a check (the API for a small upload, a worker for a large one, a worker again after the
process checking it died) holds its lease (`visapp.service.leases`) and works in a locked scratch folder.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.config import ConfigError, OnError
from visapp.errors import VisError
from visapp.formats.report import ERROR, Report
from visapp.ingest.archive import ArchiveLimits
from visapp.ingest.ingest import class_names
from visapp.service import records, scratch
from visapp.service.leases import Holder, LeaseLost
from visapp.service.params import METADATA, RAW, THUMBNAILS, VALIDATED, with_classes, with_paths
from visapp.service.records import (
    DatasetFolder,
    JobRecord,
    MetadataSummary,
    Progress,
    State,
    ValidationSummary,
)
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore

log = logging.getLogger(__name__)

MAX_CHECKS = 3  # a check whose process died this many times fails the job (a poison upload must not loop)


class UploadRefused(VisError):
    """The upload cannot become a dataset: `code` says why (an unsafe archive, no dataset in it, no classes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class CheckOutcome:
    """The record after a check, and the report (None when the archive never became a dataset)."""

    record: JobRecord
    report: Report | None


def unpack(archive: Path, dest: Path, shown_as: str, limits: ArchiveLimits | None = None) -> DatasetFolder:
    """Extract the VOC dataset in `archive` into the new folder `dest`; which folder of it was taken.

    Raises:
        UploadRefused: `unsafe_archive` (the ingest's reason), `no_dataset`; messages name the archive `shown_as`.
    """
    from visapp.ingest.archive import ArchiveRefused
    from visapp.ingest.sources import Source

    def refused(code: str, exc: Exception) -> UploadRefused:
        return UploadRefused(code, str(exc).replace(str(archive), shown_as))

    try:
        source = Source(archive, limits or ArchiveLimits())
    except ArchiveRefused as exc:
        raise refused("unsafe_archive", VisError(f"{exc.code}: {exc}")) from None
    try:
        try:
            choice = source.choose_root()
        except VisError as exc:
            raise refused("no_dataset", exc) from None
        try:
            source.extract(dest, choice.root)
        except ArchiveRefused as exc:
            raise refused("unsafe_archive", VisError(f"{exc.code}: {exc}")) from None
    finally:
        source.close()
    return DatasetFolder(root=choice.root, notes=choice.notes)


def summarize(report: Report, on_error: OnError) -> ValidationSummary:
    """The record's summary of a report; with on_error=skip, the rejected samples by error code (`left_out`)."""
    left_out: Counter[str] = Counter()
    if on_error == OnError.skip:
        rejected: dict[str, set[str]] = {}
        for issue in report["issues"]:
            if issue["severity"] == ERROR:
                rejected.setdefault(issue["path"], set()).add(issue["code"])
        left_out.update(code for codes in rejected.values() for code in codes)
    return ValidationSummary(
        samples=report["samples"],
        accepted=report["accepted"],
        rejected=report["rejected"],
        warnings=report["warnings"],
        by_code=report["by_code"],
        left_out=dict(sorted(left_out.items())),
    )


def error_codes(report: Report) -> str:
    """The error codes of a report with their counts: `bbox_invalid 3, image_missing 1`."""
    errors = {issue["code"] for issue in report["issues"] if issue["severity"] == ERROR}
    return ", ".join(f"{code} {n}" for code, n in report["by_code"].items() if code in errors)


def rejection(report: Report, stopped: str, job_id: str, folder: DatasetFolder) -> str:
    """Why a checked upload was rejected, in words a client can act on (with what the choice of its dataset's
    folder left out: often the reason)."""
    notes = "".join(f"; {note}" for note in folder.notes)
    return _rejection(report, stopped, job_id) + notes


def _rejection(report: Report, stopped: str, job_id: str) -> str:
    where = f"every issue: GET /jobs/{job_id}/report"
    if stopped == "dataset_empty" and not report["samples"]:
        return (
            "no images or annotations found in the archive: it must hold a Pascal VOC dataset (Annotations/*.xml "
            "beside JPEGImages/ or images/, or each XML beside its image)"
        )
    if stopped == "dataset_empty":
        return f"none of the {report['samples']} samples was accepted ({error_codes(report)}): fix them; {where}"
    return (
        f"{report['rejected']} of {report['samples']} samples rejected ({error_codes(report)}): fix them and upload "
        f"again, or upload with on_error=skip to keep the {report['accepted']} accepted ones; {where}"
    )


def _raw_hash(raw_dir: Path) -> str | None:
    from visapp.integrations.dvc import folder_hash

    try:
        return folder_hash(raw_dir)
    except Exception as exc:  # a name DVC cannot hash: validate reports the file itself
        log.warning("no DVC hash for the upload (%s): raw_dvc_hash stays null", exc)
        return None


def run_check(settings: ServiceSettings, store: JobStore, job_id: str, number: int) -> CheckOutcome | None:
    """Check `number` of a job's upload: validating -> ready | rejected | failed. None when another process has
    it, or the job moved on (a stale message)."""
    holder = Holder(store, job_id, "check", number, settings.heartbeat_s)

    def start(record: JobRecord) -> JobRecord | None:
        if record.state != State.validating or record.checks != number:
            return None
        record.progress = Progress(phase="unpacking the archive")
        return record

    record = holder.claim(start)
    if record is None:
        return None
    try:
        with scratch.scratch(settings.work_dir, job_id, f"check-{number}") as folder, holder.beating():
            state, fields, report = _check(settings, store, holder, record, folder)
        ended = holder.finish(lambda r: r.move(state, **fields))  # once the scratch is gone
        if ended is None:
            raise LeaseLost(f"job {job_id}: check {number} was given to another process")
        return CheckOutcome(ended, report)
    except LeaseLost as exc:
        log.warning("%s; another process checks it now", exc)
        return None
    except UploadRefused as refused:
        why = f"{refused.code}: {refused.message}"
        ended = holder.finish(lambda r: r.move(State.rejected, error=why, progress=None))
        return CheckOutcome(ended or records.load(store, job_id), None)
    except Exception as exc:
        log.exception("job %s: checking the upload failed", job_id)
        message = f"an internal error ({type(exc).__name__}) while checking the upload; the server's log has it"
        ended = holder.finish(lambda r: r.move(State.failed, error=message, progress=None))
        return CheckOutcome(ended or records.load(store, job_id), None)


def _check(
    settings: ServiceSettings, store: JobStore, holder: Holder, record: JobRecord, folder: Path
) -> tuple[State, dict[str, Any], Report]:
    """Unpack, name the classes, run the data stages, store their outputs; the state to end in, the record's
    fields, the report."""
    job_id = record.id
    archive = folder / record.upload.stored_as
    store.get(job_id, record.upload.stored_as, archive)
    shown_as = repr(record.upload.filename) if record.upload.filename else "the upload"
    dataset = unpack(archive, folder / RAW, shown_as)
    archive.unlink()
    raw = record.params
    if not record.classes_given:
        names = class_names(folder / RAW)
        if not names:
            raise UploadRefused(
                "no_classes",
                "the annotations name no object, so the class names cannot be read from them: upload again with "
                "`classes` (the names in id order, comma-separated)",
            )
        try:
            raw = with_classes(raw, names)
        except ConfigError as exc:
            raise UploadRefused(
                "invalid_classes", f"the class names found cannot be used ({exc}): send `classes`"
            ) from None
    params = with_paths(raw, folder)
    holder.write(lambda r: setattr(r, "progress", Progress(phase="validating, converting and describing")))
    from visapp.dataset.pipeline import run_data_stages

    reuse_dir = settings.work_dir / scratch.CACHE / "validate"
    result = run_data_stages(params, reuse_dir=reuse_dir, raw_dvc_hash=_raw_hash(folder / RAW))
    store.put(job_id, VALIDATED, folder / VALIDATED)
    fields: dict[str, Any] = {
        "dataset": dataset,
        "classes": list(params.data.classes),
        "params": raw,
        "validation": summarize(result.report, params.data.on_error),
        "progress": None,
    }
    if result.stopped is not None:
        fields["error"] = rejection(result.report, result.stopped, job_id, dataset)
        return State.rejected, fields, result.report
    store.put(job_id, METADATA, folder / METADATA)
    from visapp.dataset.thumbnails import draw_flagged

    try:  # what the job's page shows of the samples its report names: a picture, never a reason to fail the check
        draw_flagged(params, folder / THUMBNAILS)
        store.put(job_id, THUMBNAILS, folder / THUMBNAILS)
    except Exception as exc:
        log.warning("job %s: no thumbnails (%s: %s)", job_id, type(exc).__name__, exc)
    if result.conversion is not None:  # an empty train or val split: said now, not when a training fails
        fields["dataset"] = dataset.model_copy(update={"notes": [*dataset.notes, *result.conversion.warnings]})
    meta = result.metadata or {}
    fields["metadata"] = MetadataSummary(
        fingerprint=meta["fingerprint"],
        raw_dvc_hash=meta.get("raw_dvc_hash"),
        images=meta["overall"]["images"],
        objects=meta["overall"].get("objects"),
        splits={name: split.get("images") for name, split in meta.get("splits", {}).items()},
    )
    return State.ready, fields, result.report
