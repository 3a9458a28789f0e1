"""An uploaded archive -> a checked dataset in the job store: the same library the pipeline stages run.

unpack (the safe ingestion: visapp.ingest.sources) -> validate -> convert -> metadata, in a local scratch
folder; the report, the manifest, the metadata and its figures then go to the store. A worker that trains the
job later unpacks and converts again from the stored archive (both are deterministic and fast), so the store
holds each file once and no worker depends on another's disk.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.composition import default_params
from visapp.config import DataConfig, OnError, Params
from visapp.dataset.convert import convert
from visapp.dataset.statistics import build_metadata
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.errors import VisError
from visapp.formats.manifest import MANIFEST_FILE
from visapp.formats.metadata import METADATA_FILE
from visapp.formats.report import has_errors
from visapp.ingest.archive import ArchiveLimits
from visapp.ingest.sources import Source

log = logging.getLogger(__name__)

RAW, VALIDATED, YOLO, METADATA, MODEL = "raw", "validated", "yolo", "metadata", "model"


class UploadRefused(VisError):
    """The upload cannot become a dataset: `code` says why (an unsafe archive, no dataset in it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Prepared:
    """What checking an upload found: the report, the class list and (when accepted) the metadata."""

    report: dict[str, Any]
    classes: list[str]
    metadata: dict[str, Any] | None

    @property
    def rejected(self) -> bool:
        return self.metadata is None


def job_params(classes: list[str], overrides: dict[str, Any] | None = None, scratch: Path | None = None) -> Params:
    """conf/'s params for one job: its classes, strict validation, train overrides, paths in its scratch."""
    from visapp.config import params_dict, to_params

    raw = params_dict(default_params())
    raw["data"] = {**raw["data"], "classes": list(classes), "on_error": str(OnError.fail)}
    unknown = sorted(set(overrides or {}) - set(raw["train"]))
    if unknown:
        from difflib import get_close_matches

        near = get_close_matches(unknown[0], list(raw["train"]), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise VisError(f"train has no key {unknown[0]!r}{hint}; keys: {', '.join(sorted(raw['train']))}")
    raw["train"] = {**raw["train"], **(overrides or {})}
    if scratch is not None:
        raw["paths"] = {
            **raw["paths"],
            **{key: str(scratch / name) for key, name in (("raw", RAW), ("validated", VALIDATED), ("yolo", YOLO))},
            "metadata": str(scratch / METADATA),
            "model": str(scratch / MODEL),
        }
    return to_params(raw)


def unpack(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> None:
    """Extract the VOC dataset in `archive` into the new folder `dest`, through the ingest's checks.

    Raises:
        UploadRefused: `unsafe_archive` (with the ingest's reason), `no_dataset`.
    """
    from visapp.ingest.archive import ArchiveRefused

    try:
        source = Source(archive, limits or ArchiveLimits())
    except ArchiveRefused as exc:
        raise UploadRefused("unsafe_archive", f"{exc.code}: {exc}") from None
    try:
        try:
            root = source.find_root()
        except ArchiveRefused as exc:
            raise UploadRefused("no_dataset", str(exc)) from None
        except VisError as exc:
            raise UploadRefused("no_dataset", str(exc)) from None
        try:
            source.extract(dest, root)
        except ArchiveRefused as exc:
            raise UploadRefused("unsafe_archive", f"{exc.code}: {exc}") from None
    finally:
        source.close()


def check_dataset(scratch: Path, classes: list[str] | None) -> Prepared:
    """Validate `scratch/raw`; when nothing is rejected, convert and describe it (all under `scratch`)."""
    # No class list: every name found is a class (validation numbers them in sorted order).
    data = dataclasses.replace(job_params(classes or ["any"]).data, classes=list(classes or []))
    result = validate_dataset(scratch / RAW, data)
    write_validation(result, scratch / VALIDATED, on_error=OnError.fail)
    found = sorted({obj.name for row in result.rows for obj in row.objects})
    final = list(classes) if classes else found
    if has_errors(result.report) or not result.rows:
        return Prepared(result.report, final, None)
    data = dataclasses.replace(data, classes=final)
    convert_dataset(scratch, data)
    metadata = build_metadata(
        manifest_path=scratch / VALIDATED / MANIFEST_FILE,
        yolo_dir=scratch / YOLO,
        raw_dir=scratch / RAW,
        out_dir=scratch / METADATA,
        classes=final,
    )
    return Prepared(result.report, final, metadata)


def convert_dataset(scratch: Path, data: DataConfig) -> None:
    convert(scratch / VALIDATED / MANIFEST_FILE, scratch / RAW, scratch / YOLO, data, default_params().seed)


def summaries(prepared: Prepared) -> dict[str, Any]:
    """The record's (and the answer's) short view of a report and of the metadata."""
    report = prepared.report
    validation = {key: report[key] for key in ("samples", "accepted", "rejected", "warnings", "by_code")}
    out: dict[str, Any] = {"validation": validation, "classes": prepared.classes}
    if prepared.metadata is not None:
        meta = prepared.metadata
        out["metadata"] = {
            "fingerprint": meta["fingerprint"],
            "images": meta["overall"]["images"],
            "objects": meta["overall"].get("objects"),
            "splits": {name: split.get("images") for name, split in meta.get("splits", {}).items()},
        }
    return out


def discard(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["METADATA_FILE", "Prepared", "UploadRefused", "check_dataset", "job_params", "summaries", "unpack"]
