"""What every router of the API shares: the service's context, the caller, errors, and the public view of a job.

Every answer that is not a success has one shape, `{"error": {"code": ..., "message": ...}}` (the message says
what to do), sometimes with the job or the validation report beside it. A caller sees only the jobs made with
its token; any other id, or anything that is not an id, is 404.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from visapp.config import OnError
from visapp.service import records
from visapp.service.predictor import Predictors
from visapp.service.queue import JobQueue
from visapp.service.records import (
    DatasetFolder,
    EpochMetrics,
    JobRecord,
    MetadataSummary,
    Progress,
    State,
    Transition,
    Upload,
    ValidationSummary,
)
from visapp.service.serving import ServedModel
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore, UnknownJob
from visapp.training.results import Metrics

CHUNK = 1024 * 1024
UNAUTHORIZED = "send `Authorization: Bearer <token>` with a token of VISAPP_API_TOKEN"
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
                429: "too_many_requests"}  # fmt: skip


@dataclass
class Context:
    """The service's parts, made once per app (`app.state.context`)."""

    settings: ServiceSettings
    store: JobStore
    queue: JobQueue
    tokens: tuple[bytes, ...]
    open_access: bool
    predictors: Predictors
    served: ServedModel | None = None  # the promoted model, once loaded (`visapp.service.serving`)
    served_weights: Path | None = None  # its best.pt (and best.onnx beside it when `served.onnx`)
    max_image_pixels: int | None = None  # conf's `data.max_image_pixels`, read at the first prediction

    def image_limit(self) -> int:
        """The most pixels an image to predict may have: conf's `data.max_image_pixels`, composed once per
        process (composing conf/ takes about 15 ms, as long as a prediction)."""
        if self.max_image_pixels is None:
            from visapp.composition import applicable_params

            self.max_image_pixels = applicable_params(".").data.max_image_pixels
        return self.max_image_pixels


def context(request: Request) -> Context:
    """The app's `Context` (a dependency of every route)."""
    found: Context = request.app.state.context
    return found


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answer: its HTTP status, code and message, and what else the body holds (`extra`)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class ErrorDetail(BaseModel):
    """What went wrong: a code a client can branch on, and a message a person can act on."""

    code: str
    message: str


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The JSON answer of an error: `{"error": {"code", "message"}}` and the extra fields that are set."""
    body = {"error": {"code": code, "message": message}, **{k: v for k, v in extra.items() if v is not None}}
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}  # RFC 6750: say which scheme is expected
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------- the caller


def identify(authorization: str, tokens: tuple[bytes, ...], open_access: bool = False) -> str | None:
    """The caller an `Authorization` header names: a hash of its token ("open" when the service runs open,
    without tokens), or None when the header carries no token of VISAPP_API_TOKEN."""
    if open_access and not tokens:
        return "open"
    scheme, _, given = authorization.partition(" ")
    presented = given.strip().encode()
    match = False
    for token in tokens:  # every token compared, in constant time: no early exit to time
        match |= hmac.compare_digest(presented, token)
    if scheme.lower() != "bearer" or not match:
        return None
    return hashlib.sha256(presented).hexdigest()[:16]


BEARER = HTTPBearer(auto_error=False, scheme_name="token", description="a token of VISAPP_API_TOKEN")


async def caller(request: Request, _: HTTPAuthorizationCredentials | None = Security(BEARER)) -> str:  # noqa: B008
    """The caller's identity. (The `Authenticate` middleware has refused a request without a valid token already:
    this names the caller, and declares the token in the schema.) Async because it does no I/O: a plain function
    would cost a thread-pool hop."""
    ctx = context(request)
    owner = identify(request.headers.get("authorization", ""), ctx.tokens, ctx.open_access)
    if owner is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED)
    return owner


def own_job(ctx: Context, job_id: str, owner: str) -> JobRecord:
    """The caller's job, or 404 (another token's job, no such job, not a job id)."""
    try:
        record = records.load(ctx.store, job_id)
    except UnknownJob:
        record = None
    if record is None or record.owner != owner:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (for this token): check the id")
    return record


def owned_records(ctx: Context, owner: str) -> Iterator[JobRecord]:
    """The records of the caller's jobs (jobs deleted meanwhile, or not readable by this release, are passed over)."""
    for job_id in ctx.store.job_ids():
        try:
            record = records.load(ctx.store, job_id)
        except (UnknownJob, ValueError):  # deleted meanwhile, or not a record this release reads
            continue
        if record.owner == owner:
            yield record


Caller = Depends(caller)
Ctx = Depends(context)


# ---------------------------------------------------------------- what a client sees of a job


class PublicLease(BaseModel):
    """Which work holds the job now (the worker stays inside)."""

    task: str
    number: int
    heartbeat_at: float


class PublicAttempt(BaseModel):
    """An attempt as a client sees it (its params and the worker's code stay inside)."""

    number: int
    training: int
    state: State
    resumes: int | None
    overrides: dict[str, Any]
    queued_at: float
    started_at: float | None
    finished_at: float | None
    epochs_done: int
    epoch_metrics: list[EpochMetrics] = []  # each epoch's losses and metrics, as they came: the training's curve
    metrics: Metrics | None
    mlflow_run_id: str | None
    model: bool
    error: str | None


class Job(BaseModel):
    """A job as a client sees it (the owner, the worker's host and the composed params stay inside; the params
    are in the job's lineage)."""

    id: str
    state: State
    created_at: float
    updated_at: float
    history: dict[str, float]  # when each state was last entered
    transitions: list[Transition]
    upload: Upload
    on_error: OnError
    classes: list[str] | None
    dataset: DatasetFolder | None
    validation: ValidationSummary | None
    metadata: MetadataSummary | None
    checks: int
    training: int
    attempt: int
    attempts: list[PublicAttempt]
    lease: PublicLease | None
    progress: Progress | None
    mlflow_run_id: str | None
    metrics: Metrics | None
    error: str | None
    note: str | None

    @classmethod
    def of(cls, record: JobRecord) -> Job:
        """What a client sees of `record`."""
        data = record.model_dump(exclude={"owner", "params", "code", "classes_given"})
        hidden = ("params", "worker_code")
        data["attempts"] = [{k: v for k, v in a.items() if k not in hidden} for a in data["attempts"]]
        if data["lease"] is not None:
            data["lease"].pop("worker")
        return cls(**data, history=record.history)


class ErrorBody(BaseModel):
    """The body of an error answer: the error, and the job it concerns (with its report, for a rejected upload)."""

    error: ErrorDetail
    job_id: str | None = None
    job: Job | None = None
    report: dict[str, Any] | None = None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for these error statuses (all with the `ErrorBody` schema)."""
    return {status: {"model": ErrorBody} for status in statuses}


def stream(handle: IO[bytes], name: str, media_type: str = "application/octet-stream",
           cleanup: Path | None = None) -> StreamingResponse:  # fmt: skip
    """An answer that streams `handle` in chunks (closing it, and removing `cleanup`, when done); `name` is the file
    name a download is saved as."""

    def chunks() -> Iterator[bytes]:
        try:
            while block := handle.read(CHUNK):
                yield block
        finally:
            handle.close()
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)

    headers = {"Content-Disposition": f'attachment; filename="{name}"'} if media_type.endswith("octet-stream") else {}
    return StreamingResponse(chunks(), media_type=media_type, headers=headers)


def job_error(status: int, code: str, message: str, record: JobRecord, **extra: Any) -> ApiError:
    """An error about a job, with the job (and its id at the top, as the upload's answer has it) beside it."""
    return ApiError(status, code, message, job_id=record.id, job=Job.of(record).model_dump(mode="json"), **extra)


LINKED_OPERATIONS = {
    "GetJob": "get_job",
    "TrainJob": "train_async",
    "CancelJob": "cancel",
    "DeleteJob": "delete_job",
    "JobReport": "job_report",
    "JobLineage": "job_lineage",
    "JobMetadata": "dataset_metadata",
    "JobModel": "download_model",
    "JobEvaluation": "job_evaluation",
    "JobAudit": "job_audit",
}


def job_links(job_id: str) -> dict[str, Any]:
    """OpenAPI links from an answer that names a job (`job_id`: a runtime expression) to each operation on a job:
    a client (and schemathesis' stateful phase) learns where the id of those operations comes from."""
    return {
        name: {"operationId": operation, "parameters": {"job_id": job_id}}
        for name, operation in LINKED_OPERATIONS.items()
    }


class Prediction(BaseModel):
    """What a model sees in an image: its boxes (class, confidence, xyxy in the image's pixels, in the frame
    training sees), and which model answered, with which runtime, in how many milliseconds."""

    model: dict[str, Any]
    image: dict[str, Any]
    confidence: float
    boxes: list[dict[str, Any]]
    ms: float


IMAGE_STATUS = {"image_unreadable": 415, "image_truncated": 422, "image_too_large": 413}


def predict_answer(ctx: Context, loaded: Any, image: Any, confidence: float) -> Prediction:
    """Read an uploaded image (at most VISAPP_MAX_UPLOAD bytes) and predict it; image problems as 4xx."""
    from visapp.service.predictor import ImageRefused

    data = image.file.read(ctx.settings.max_upload + 1)
    if len(data) > ctx.settings.max_upload:
        raise ApiError(
            413, "too_large", f"the image is larger than {ctx.settings.max_upload:,} bytes (VISAPP_MAX_UPLOAD)"
        )
    try:
        return Prediction(**ctx.predictors.predict(loaded, data, ctx.image_limit(), confidence))
    except ImageRefused as exc:
        raise ApiError(IMAGE_STATUS.get(exc.code, 422), exc.code, exc.message) from None
