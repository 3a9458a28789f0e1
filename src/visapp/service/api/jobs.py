"""The jobs: train one, cancel it, read it (its state, report, figures, lineage, metadata, models), delete it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from visapp.config import ConfigError
from visapp.errors import VisError
from visapp.service import records
from visapp.service.api.common import (
    ApiError,
    Caller,
    Context,
    Ctx,
    Job,
    Prediction,
    errors,
    job_links,
    own_job,
    owned_records,
    predict_answer,
    stream,
)
from visapp.service.lineage import lineage
from visapp.service.params import METADATA, VALIDATED, TrainOverrides, training_params
from visapp.service.records import ACTIVE, CANCEL_FILE, TRAINABLE, Attempt, Conflict, JobRecord, Progress, State
from visapp.service.training import model_folder

router = APIRouter()
JOB = "/jobs/{job_id}"
FIGURE_TYPES = {".png": "image/png"}


class JobPage(BaseModel):
    """A page of the caller's jobs, and `next`: the `after` of the next page (None: this is the last)."""

    jobs: list[Job]
    next: str | None = None


# ---------------------------------------------------------------- training


@router.post("/train-async/{job_id}", status_code=202, response_model=Job, responses=errors(400, 404, 409, 422, 429))
def train_async(
    job_id: str,
    overrides: TrainOverrides | None = Body(None),  # noqa: B008
    owner: str = Caller,
    ctx: Context = Ctx,
) -> Job:
    """Queue a training of the job's dataset with `train.*` overrides (conf/'s values for the others); poll
    `GET /jobs/{job_id}`."""
    record = own_job(ctx, job_id, owner)
    if record.state not in TRAINABLE:
        raise ApiError(409, "not_trainable", f"job {job_id} is {record.state}: only a ready (or finished) dataset "
                       "can be trained")  # fmt: skip
    splits = record.metadata.splits if record.metadata else {}
    empty = [name for name in ("train", "val") if not splits.get(name)]
    if empty:
        counts = ", ".join(f"{name} {n or 0}" for name, n in splits.items())
        raise ApiError(409, "not_trainable", f"the dataset's {' and '.join(empty)} split is empty ({counts} images): "
                       "training needs images in both; upload a larger dataset")  # fmt: skip
    asked: dict[str, Any] = overrides.model_dump(exclude_none=True, mode="json") if overrides is not None else {}
    try:
        params = training_params(record.params, asked)
    except (ConfigError, VisError) as exc:
        raise ApiError(422, "invalid_override", str(exc)) from None
    active = sum(1 for other in owned_records(ctx, owner) if other.state in ACTIVE)
    if active >= ctx.settings.max_queued_jobs:
        raise ApiError(429, "too_many_jobs", f"{active} jobs of this token are being checked, queued or running: "
                       "wait for one")  # fmt: skip
    ctx.store.remove(job_id, CANCEL_FILE)

    def queued(r: JobRecord) -> JobRecord:
        if r.state not in TRAINABLE:
            raise Conflict(f"job {job_id} is {r.state}")
        number, training = r.attempt + 1, r.training + 1
        r.attempts.append(Attempt(number=number, training=training, state=State.queued, queued_at=records.now(),
                                  overrides=asked, params=params))  # fmt: skip
        return r.move(State.queued, training=training, attempt=number, progress=Progress(phase="queued"),
                      error=None, metrics=None, mlflow_run_id=None, note=None)  # fmt: skip

    try:
        record = records.update(ctx.store, job_id, queued)
    except Conflict as exc:
        raise ApiError(409, "not_trainable", str(exc)) from None
    ctx.queue.train(job_id, record.attempt)
    return Job.of(record)


@router.post(JOB + "/cancel", status_code=202, response_model=Job, responses=errors(404, 409))
def cancel(job_id: str, owner: str = Caller, ctx: Context = Ctx) -> Job:
    """Stop a queued or running training; a running one keeps its checkpoint and its best weights so far."""
    record = own_job(ctx, job_id, owner)
    if record.state not in (State.queued, State.running):
        raise ApiError(409, "not_active", f"job {job_id} is {record.state}: nothing to cancel")
    ctx.store.create(job_id, CANCEL_FILE, b"requested")

    def stop_queued(r: JobRecord) -> JobRecord | None:
        if r.state != State.queued:
            return None
        current = r.current_attempt()
        if current is not None:
            current.state, current.finished_at = State.cancelled, records.now()
        return r.move(State.cancelled, progress=None)

    return Job.of(records.update(ctx.store, job_id, stop_queued))


# ---------------------------------------------------------------- reading


@router.get(JOB, response_model=Job, responses=errors(404))
async def get_job(job_id: str, owner: str = Caller, ctx: Context = Ctx) -> Job:
    """A job: state, progress (phase; epoch n/N and its metrics), attempts, MLflow run, timings, error."""
    # The most polled route, so async: a plain function would cost two hops to the thread pool (the call and the
    # answer's validation), more than the read of a local record itself. An S3 read goes to a thread.
    record = own_job(ctx, job_id, owner) if ctx.store.local else await asyncio.to_thread(own_job, ctx, job_id, owner)
    return Job.of(record)


@router.get(
    "/jobs", response_model=JobPage, responses={200: {"links": job_links("$response.body#/jobs/0/id")}, **errors(422)}
)
def list_jobs(
    limit: int = Query(50, ge=1, le=500),
    after: str | None = Query(None, description="the `next` of the previous page"),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> JobPage:
    """This token's jobs, oldest first, a page at a time."""
    found = sorted(owned_records(ctx, owner), key=lambda r: (r.created_at, r.id))
    if after is not None:
        ids = [r.id for r in found]
        if after not in ids:
            raise ApiError(422, "invalid_cursor", f"after: no job {after!r} of this token; give the `next` of a page")
        found = found[ids.index(after) + 1 :]
    page = found[:limit]
    return JobPage(jobs=[Job.of(r) for r in page], next=page[-1].id if len(found) > limit else None)


@router.delete(JOB, status_code=204, response_class=Response, responses=errors(404, 409))
def delete_job(job_id: str, owner: str = Caller, ctx: Context = Ctx) -> Response:
    """Delete a finished job and every file of it (its archive, report, metadata, checkpoints and models)."""
    record = own_job(ctx, job_id, owner)
    if record.state in ACTIVE:
        raise ApiError(409, "job_active", f"job {job_id} is {record.state}: cancel it (or wait for it) first")
    ctx.store.delete_job(job_id)
    return Response(status_code=204)


def _stored_json(ctx: Context, record: JobRecord, name: str, what: str) -> JSONResponse:
    data = ctx.store.read_bytes(record.id, name)
    if data is None:
        raise ApiError(409, f"no_{what}", f"job {record.id} is {record.state}: it has no {what} (yet)")
    return JSONResponse(json.loads(data))


@router.get(JOB + "/report", response_model=dict[str, Any], responses=errors(404, 409))
def job_report(job_id: str, owner: str = Caller, ctx: Context = Ctx) -> JSONResponse:
    """The whole validation report: every issue with its code, severity, file and message (as report.json)."""
    return _stored_json(ctx, own_job(ctx, job_id, owner), f"{VALIDATED}/report.json", "report")


@router.get("/dataset/metadata/{job_id}", response_model=dict[str, Any], responses=errors(404, 409))
def dataset_metadata(job_id: str, owner: str = Caller, ctx: Context = Ctx) -> JSONResponse:
    """The dataset's `dataset_metadata.json` (statistics, fingerprint, DVC hash, the figures' names)."""
    return _stored_json(ctx, own_job(ctx, job_id, owner), f"{METADATA}/dataset_metadata.json", "metadata")


@router.get(
    JOB + "/figures/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/png": {}}}, **errors(404, 409)},
)
def job_figure(job_id: str, name: str, owner: str = Caller, ctx: Context = Ctx) -> StreamingResponse:
    """One of the metadata's figures (`class_distribution.png`, `flagged.png`, ...: `figures` in the metadata)."""
    record = own_job(ctx, job_id, owner)
    metadata = ctx.store.read_json(job_id, f"{METADATA}/dataset_metadata.json")
    if metadata is None:
        raise ApiError(409, "no_metadata", f"job {job_id} is {record.state}: it has no figures (yet)")
    names = list(metadata.get("figures") or [])
    if name not in names:
        raise ApiError(404, "unknown_figure", f"no figure {name!r}; this job's figures: {', '.join(names)}")
    media = FIGURE_TYPES.get(name[name.rfind(".") :], "application/octet-stream")
    return stream(ctx.store.reader(job_id, f"{METADATA}/{name}"), name, media)


@router.get(JOB + "/lineage", response_model=dict[str, Any], responses=errors(404))
def job_lineage(
    job_id: str,
    attempt: int | None = Query(None, ge=1, description="an attempt's lineage (default: the newest)"),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> dict[str, Any]:
    """Where the job's model comes from: the dataset (fingerprint, DVC hash), the params as composed, the code that
    checked and trained it (package version, git commit), the MLflow run, the attempt."""
    record = own_job(ctx, job_id, owner)
    if attempt is not None and not any(a.number == attempt for a in record.attempts):
        raise ApiError(404, "unknown_attempt", f"job {job_id} has no attempt {attempt} (it has {record.attempt})")
    return lineage(record, attempt)


@router.get(
    "/download/model/{job_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404, 409)},
)
def download_model(
    job_id: str,
    attempt: int | None = Query(None, ge=1, description="an attempt's weights (default: the newest that succeeded)"),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> StreamingResponse:
    """The trained weights (`best.pt`, Ultralytics' format): the newest training that succeeded, also while another
    runs; `?attempt=N` for an attempt's own (a cancelled or failed one: its best weights so far)."""
    chosen = _attempt_with_model(own_job(ctx, job_id, owner), attempt)
    handle = ctx.store.reader(job_id, f"{model_folder(chosen.number)}/weights/best.pt")
    return stream(handle, f"{job_id}-{chosen.number}-best.pt")


def _attempt_with_model(record: JobRecord, attempt: int | None) -> Attempt:
    """The newest attempt that succeeded (or attempt N) and left its model; 404/409 otherwise."""
    if attempt is None:
        chosen = record.latest_model()
        if chosen is None:
            kept = [a.number for a in record.attempts if a.model]
            hint = f"; attempts with weights so far: {kept} (`?attempt=N`)" if kept else ""
            raise ApiError(
                409, "no_model", f"job {record.id} has no training that succeeded (it is {record.state}){hint}"
            )
        return chosen
    found = next((a for a in record.attempts if a.number == attempt), None)
    if found is None:
        raise ApiError(404, "unknown_attempt", f"job {record.id} has no attempt {attempt}")
    if not found.model:
        raise ApiError(409, "no_model", f"attempt {attempt} of job {record.id} is {found.state}: it left no weights")
    return found


ATTEMPT = Query(None, ge=1, description="an attempt's (default: the newest training that succeeded)")


@router.get(JOB + "/evaluation", response_model=dict[str, Any], responses=errors(404, 409))
def job_evaluation(job_id: str, attempt: int | None = ATTEMPT, owner: str = Caller, ctx: Context = Ctx) -> JSONResponse:
    """The model's evaluation on the held-out split (as the evaluate stage's eval.json: overall and per class)."""
    record = own_job(ctx, job_id, owner)
    chosen = _attempt_with_model(record, attempt)
    return _stored_json(ctx, record, f"{model_folder(chosen.number)}/eval.json", "evaluation")


@router.get(JOB + "/audit", response_model=dict[str, Any], responses=errors(404, 409))
def job_audit(job_id: str, attempt: int | None = ATTEMPT, owner: str = Caller, ctx: Context = Ctx) -> JSONResponse:
    """The likely label errors of the job's dataset, worst first (as the evaluate stage's audit.json)."""
    record = own_job(ctx, job_id, owner)
    chosen = _attempt_with_model(record, attempt)
    return _stored_json(ctx, record, f"{model_folder(chosen.number)}/audit.json", "audit")


@router.post(JOB + "/predict", response_model=Prediction, responses=errors(404, 409, 413, 415, 422))
def predict_job(
    job_id: str,
    image: UploadFile = File(description="an image: JPEG, PNG, BMP or WebP"),  # noqa: B008
    confidence: float = Form(0.25, gt=0, le=1, description="the lowest confidence of a box answered"),
    attempt: int | None = ATTEMPT,
    owner: str = Caller,
    ctx: Context = Ctx,
) -> Prediction:
    """The job's model's boxes on an image (PyTorch; loaded once per process)."""
    record = own_job(ctx, job_id, owner)
    chosen = _attempt_with_model(record, attempt)

    def fetch(folder: Path) -> Path:
        ctx.store.get(job_id, f"{model_folder(chosen.number)}/weights/best.pt", folder / "best.pt")
        return folder / "best.pt"

    loaded = ctx.predictors.loaded(f"job:{job_id}:{chosen.number}", f"job {job_id} attempt {chosen.number}", fetch)
    return predict_answer(ctx, loaded, image, confidence)
