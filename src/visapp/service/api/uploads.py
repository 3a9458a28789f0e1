"""POST /upload-dataset: an archive in, a job out, checked by the pipeline's data stages.

The archive is received into a locked scratch folder, stored in the job, and checked (`visapp.service.checks`):
in the request when it is small (201, or 422 with the report), by a worker when it is large (202; poll the job).
Either way the check holds a lease, so a process that dies while checking leaves the job to the reaper.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from visapp.config import ConfigError, OnError
from visapp.service import records, scratch
from visapp.service.api.common import CHUNK, ApiError, Caller, Context, Ctx, Job, errors, job_error, job_links
from visapp.service.checks import run_check
from visapp.service.lineage import code_version
from visapp.service.params import dataset_params
from visapp.service.records import DatasetFolder, JobRecord, State, Upload
from visapp.service.store import new_job_id

UPLOAD_PATH = "/upload-dataset"
router = APIRouter()


class UploadAnswer(BaseModel):
    """The answer to an upload: the job, and what the check found so far (its classes, dataset folder, summaries)."""

    job_id: str
    job: Job
    classes: list[str] | None = None
    dataset: DatasetFolder | None = None
    validation: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    note: str | None = None


JOB_LINKS = job_links("$response.body#/job_id")


def too_large(max_upload: int) -> str:
    """The message of a 413: the upload exceeds VISAPP_MAX_UPLOAD."""
    return f"the upload is larger than the limit of {max_upload:,} bytes (VISAPP_MAX_UPLOAD)"


def parse_classes(text: str | None) -> list[str] | None:
    """The class names of an upload's `classes` field (comma-separated, or a JSON list); None when not given.

    Raises:
        ApiError: 422 `invalid_classes` for an empty or repeated name, or a list that is not of strings.
    """
    if text is None or not text.strip():
        return None
    try:
        names = json.loads(text) if text.strip().startswith("[") else text.split(",")
    except ValueError:
        raise ApiError(422, "invalid_classes", "classes: write names comma-separated, or as a JSON list") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError(422, "invalid_classes", "classes: a JSON list of strings, or names comma-separated")
    names = [name.strip() for name in names]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise ApiError(422, "invalid_classes", "classes: every name once, none empty")
    return names


def answer(record: JobRecord, status: int, note: str | None = None) -> JSONResponse:
    """The upload's answer for `record` with `status` (201: checked, 202: queued)."""
    body = UploadAnswer(
        job_id=record.id,
        job=Job.of(record),
        classes=record.classes,
        dataset=record.dataset,
        validation=record.validation.model_dump() if record.validation else None,
        metadata=record.metadata.model_dump() if record.metadata else None,
        note=note,
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status)


def _notes(record: JobRecord) -> str | None:
    notes = []
    if not record.classes_given and record.classes:
        notes.append("no classes given: the class list is every name found in the annotations, sorted")
    if record.validation and record.validation.left_out:
        codes = ", ".join(f"{code} {n}" for code, n in record.validation.left_out.items())
        notes.append(f"{record.validation.rejected} sample(s) left out (on_error=skip): {codes}")
    if record.dataset:
        notes += record.dataset.notes
    return "; ".join(notes) or None


def _receive(file: UploadFile, folder: Path, max_upload: int) -> Path:
    """The upload, written to `folder`: at most `max_upload` bytes (413 past them, for a body sent without a
    length), and a ZIP or a tar by its bytes (415 otherwise)."""
    from visapp.ingest.archive import archive_kind

    path = folder / "upload.bin"
    received = 0
    with path.open("wb") as out:
        while block := file.file.read(CHUNK):
            received += len(block)
            if received > max_upload:
                raise ApiError(413, "too_large", too_large(max_upload))
            out.write(block)
    kind = archive_kind(path)
    if kind is None:
        raise ApiError(415, "not_an_archive", "the file is not a ZIP or tar archive: upload the dataset as a ZIP")
    return path.rename(folder / f"upload.{kind}")


def _accept(ctx: Context, file: UploadFile, owner: str, job_id: str, wanted: list[str] | None,
            on_error: OnError, params: dict[str, Any]) -> JSONResponse:  # fmt: skip
    with scratch.scratch(ctx.settings.work_dir, job_id, "upload") as folder:
        archive = _receive(file, folder, ctx.settings.max_upload)
        upload = Upload(filename=file.filename or "", bytes=archive.stat().st_size, stored_as=archive.name)
        # The record first: a process killed while it stores the archive leaves a job the reaper ends (failed),
        # not an archive nobody knows of.
        record = records.save(ctx.store, records.new_record(job_id, owner, upload, params, code_version(), on_error,
                                                            wanted))  # fmt: skip
        ctx.store.put(job_id, archive.name, archive)
    record = records.save(ctx.store, record.move(State.validating, checks=1))
    if upload.bytes > ctx.settings.inline_limit:
        ctx.queue.check_upload(job_id, 1)
        return answer(record, 202, "a worker checks the upload: poll GET /jobs/{job_id}")
    outcome = run_check(ctx.settings, ctx.store, job_id, 1)
    record = outcome.record if outcome is not None else records.load(ctx.store, job_id)
    if record.state == State.ready:
        return answer(record, 201, _notes(record))
    if record.state == State.validating:  # the reaper gave it to a worker meanwhile (this process was too slow)
        return answer(record, 202, "a worker checks the upload: poll GET /jobs/{job_id}")
    error = record.error or "the upload was not accepted"
    if outcome is not None and outcome.report is not None:
        raise job_error(422, "dataset_rejected", error, record, report=outcome.report)
    code, _, message = error.partition(": ") if record.state == State.rejected else ("internal", "", error)
    status = {"unsafe_archive": 400, "internal": 500}.get(code, 422)
    raise job_error(status, code, message or error, record)


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=UploadAnswer,
    responses={
        201: {"links": JOB_LINKS},
        202: {"model": UploadAnswer, "links": JOB_LINKS},
        **errors(400, 413, 415, 422, 429),
    },
)
async def upload_dataset(
    file: UploadFile = File(description="the dataset: a ZIP (or tar) of a Pascal VOC folder"),  # noqa: B008
    classes: str | None = Form(None, description="class names in id order, comma-separated or a JSON list"),
    on_error: OnError = Form(  # noqa: B008
        OnError.fail, description="fail: one rejected sample rejects the upload; skip: keep the accepted samples"
    ),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> JSONResponse:
    """Receive a dataset archive and check it as the pipeline does (in the request when small, by a worker when
    large)."""
    wanted = parse_classes(classes)
    try:
        params = dataset_params(wanted, on_error)
    except ConfigError as exc:
        raise ApiError(422, "invalid_classes", f"classes: {exc}") from None
    job_id = new_job_id()
    return await asyncio.to_thread(_accept, ctx, file, owner, job_id, wanted, on_error, params)
