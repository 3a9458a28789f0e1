"""The HTTP face: upload a dataset, train it in the background, poll, download; the released models.

Every answer that is not a success has one shape, `{"error": {"code": ..., "message": ...}}` (the message says
what to do), sometimes with the job or the validation report beside it. Requests carry `Authorization: Bearer
<token>` (`VISAPP_API_TOKEN`, compared in constant time); a caller sees only the jobs made with its token, and
any other id, or anything that is not an id, is 404. The app holds no state of its own: every job lives in
the job store, so API processes can be restarted or run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from visapp.errors import VisError
from visapp.service import jobs
from visapp.service.jobs import ACTIVE, FINISHED, TRAINABLE, Conflict, State
from visapp.service.prepare import METADATA, MODEL, UploadRefused, check_dataset, discard, job_params, unpack
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore, UnknownJob, new_job_id

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
UPLOAD_PATH = "/upload-dataset"
# Answered without a token: the health verdict, and the API's description (the schema and its two viewers), which
# holds no job and no data.
DOCS, REDOC, OPENAPI = "/docs", "/redoc", "/openapi.json"
PUBLIC_PATHS = frozenset({"/health", DOCS, f"{DOCS}/oauth2-redirect", REDOC, OPENAPI})
UNAUTHORIZED = "send `Authorization: Bearer <token>` with a token of VISAPP_API_TOKEN"


# ---------------------------------------------------------------- answers


class ErrorDetail(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    state: State
    created_at: float
    updated_at: float
    history: dict[str, float]
    attempt: int
    lease: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    mlflow_run_id: str | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    job: Job | None = None
    report: dict[str, Any] | None = None


class UploadAnswer(BaseModel):
    job: Job
    classes: list[str] | None = None
    note: str | None = None
    validation: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class JobPage(BaseModel):
    jobs: list[Job]
    next: str | None = None


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    ok: bool
    store: Check
    queue: Check
    tracking: Check


class ModelVersion(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}, **{k: v for k, v in extra.items() if v is not None}}
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}  # RFC 6750: say which scheme is expected
    return JSONResponse(body, status_code=status, headers=headers)


def identify(authorization: str, tokens: list[bytes], open_access: bool = False) -> str | None:
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


STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
                429: "too_many_requests"}  # fmt: skip


# ---------------------------------------------------------------- checks that act before the body is read


class Authenticate:
    """A request to any path but PUBLIC_PATHS without a valid token gets 401 at once: before its body is read, an
    upload slot is taken or its parameters are validated (an unauthenticated caller can neither make the server
    spool a large body nor keep the uploads of others out, and learns nothing of the limits or the routes)."""

    def __init__(self, app: ASGIApp, tokens: list[bytes], open_access: bool) -> None:
        self.app, self.tokens, self.open_access = app, tokens, open_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            header = Headers(scope=scope).get("authorization", "")
            if identify(header, self.tokens, self.open_access) is None:
                await _error_response(401, "unauthorized", UNAUTHORIZED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class UploadGate:
    """Before an upload's body is read: one whose Content-Length is past `max_upload` gets 413, and one past `limit`
    uploads at once gets 429. (A body sent without a length is stopped at `max_upload` bytes by the route.)"""

    def __init__(self, app: ASGIApp, limit: int, max_upload: int) -> None:
        self.app, self.limit, self.max_upload, self.active = app, limit, max_upload, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != UPLOAD_PATH or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_upload:
            # Answered here: past the route's own limit, Starlette would answer a plain-text 413.
            await _error_response(413, "too_large", too_large(self.max_upload))(scope, receive, send)
            return
        if self.active >= self.limit:
            answer = _error_response(
                429, "too_many_uploads", f"{self.limit} uploads are being received already: retry in a minute"
            )
            await answer(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def too_large(max_upload: int) -> str:
    return f"the upload is larger than the limit of {max_upload:,} bytes (VISAPP_MAX_UPLOAD)"


# ---------------------------------------------------------------- the app


def create_app(settings: ServiceSettings | None = None, open_access: bool = False, consume: bool = True) -> FastAPI:
    """The service. `open_access`: no token needed (the command line allows it on loopback only); `consume`:
    run one queue consumer (and the reaper) in this process, as `visapp serve` does by default."""
    from visapp.service.queue import JobQueue
    from visapp.service.worker import Reaper

    settings = settings or ServiceSettings.from_env()
    if not settings.tokens and not open_access:
        raise VisError("VISAPP_API_TOKEN is not set: set it (a long random string), or run open on loopback")
    tokens = [token.encode() for token in settings.tokens]
    store = JobStore(settings.store_url)
    queue = JobQueue(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = Reaper(settings, store, queue.train)
        reaper.start()
        consumer = queue.consumer(in_thread=True) if consume else None
        if consumer is not None:
            consumer.start()
        log.info("visapp service: store %s, queue %s", settings.store_url, type(queue.huey).__name__)
        try:
            yield
        finally:
            reaper.stop()
            if consumer is not None:
                consumer.stop(graceful=False)

    app = FastAPI(
        title="VIS: Vision Intelligence System",
        version="1",
        summary="Upload a Pascal VOC dataset, train a YOLO detector on it in the background, download the model.",
        lifespan=lifespan,
        responses=_errors(401),
        docs_url=DOCS,
        redoc_url=REDOC,
        openapi_url=OPENAPI,
    )
    # The last added runs first: the token is checked before an upload takes a slot.
    app.add_middleware(UploadGate, limit=settings.max_concurrent_uploads, max_upload=settings.max_upload)
    app.add_middleware(Authenticate, tokens=tokens, open_access=open_access)
    bearer = HTTPBearer(auto_error=False, scheme_name="token", description="a token of VISAPP_API_TOKEN")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 413:
            message = too_large(settings.max_upload)
        return _error_response(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            parts.append(f"{where or 'body'}: {error.get('msg')}")
        return _error_response(422, "invalid_request", "; ".join(parts) or "the request is not valid")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(500, "internal", f"an unexpected error ({type(exc).__name__}); see the server's log")

    async def caller(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:  # noqa: B008
        """The caller's identity: a hash of its token ("open" without tokens). (Authenticate has refused a request
        without a valid token already; this names the caller, and refuses too should a route ever be public.)
        Async because it does no I/O: a plain function would cost every request a hop to the thread pool."""
        owner = identify(request.headers.get("authorization", ""), tokens, open_access)
        if owner is None:
            raise ApiError(401, "unauthorized", UNAUTHORIZED)
        return owner

    def own_job(job_id: str, owner: str) -> dict[str, Any]:
        try:
            record = jobs.load(store, job_id)
        except UnknownJob:
            record = None
        if record is None or record.get("owner") != owner:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (for this token): check the id")
        return record

    # ------------------------------------------------------------ upload

    @app.post(
        UPLOAD_PATH,
        status_code=201,
        response_model=UploadAnswer,
        max_body_size=settings.max_upload,
        responses={202: {"model": UploadAnswer}, **_errors(400, 413, 415, 422, 429)},
    )
    async def upload_dataset(
        file: UploadFile = File(description="the dataset: a ZIP (or tar) of a Pascal VOC folder"),  # noqa: B008
        classes: str | None = Form(None, description="class names in id order, comma-separated or a JSON list"),
        owner: str = Depends(caller),
    ) -> JSONResponse:
        """Receive a dataset archive; check it (in the request when small, by a worker when large)."""
        wanted = _parse_classes(classes)
        job_id = new_job_id()
        scratch = settings.work_dir / job_id / "upload"
        try:
            received = await asyncio.to_thread(_receive, file, scratch)
            return await asyncio.to_thread(_accept, received, file.filename or "", wanted, owner, job_id, scratch)
        finally:
            await asyncio.to_thread(_clean, scratch)

    def _receive(file: UploadFile, scratch: Path) -> Path:
        from visapp.ingest.archive import archive_kind

        scratch.mkdir(parents=True)
        path = scratch / "upload.bin"
        with path.open("wb") as out:
            shutil.copyfileobj(file.file, out, CHUNK)
        kind = archive_kind(path)
        if kind is None:
            raise ApiError(415, "not_an_archive", "the file is not a ZIP or tar archive: upload the dataset as a ZIP")
        return path.rename(scratch / f"upload.{kind}")

    def _accept(
        archive: Path, filename: str, wanted: list[str] | None, owner: str, job_id: str, scratch: Path
    ) -> JSONResponse:
        size = archive.stat().st_size
        upload = {"filename": filename, "bytes": size, "stored_as": archive.name}
        record = jobs.new_record(job_id, owner, upload=upload, classes_given=wanted, classes=wanted)
        store.put(job_id, archive.name, archive)
        jobs.save(store, jobs.move(record, State.validating))
        note = None if wanted else "no classes given: the class list is every name found, sorted"
        if size > settings.inline_limit:
            queue.check_upload(job_id)
            body = UploadAnswer(job=Job(**jobs.public(record)), note=note)
            return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=202)
        try:
            unpack(archive, scratch / "raw")
        except UploadRefused as exc:
            message = exc.message.replace(str(archive), repr(filename) if filename else "the upload")
            record = jobs.save(store, jobs.move(record, State.rejected, error=f"{exc.code}: {message}"))
            status = 400 if exc.code == "unsafe_archive" else 422
            raise ApiError(status, exc.code, message, job=jobs.public(record)) from None
        from visapp.service.worker import store_checked

        prepared = check_dataset(scratch, wanted)
        fields = store_checked(store, job_id, scratch, prepared)
        if prepared.rejected:
            record = jobs.save(store, jobs.move(record, State.rejected, **fields))
            report = prepared.report
            message = (
                f"{report['rejected']} of {report['samples']} samples rejected ({_codes(report)}): fix them and "
                "upload again (every issue is in `report`)"
                if report["samples"]
                else "no samples found in the archive: it must hold a Pascal VOC dataset"
            )
            raise ApiError(422, "dataset_rejected", message, job=jobs.public(record), report=report)
        record = jobs.save(store, jobs.move(record, State.ready, **fields))
        body = UploadAnswer(job=Job(**jobs.public(record)), note=note, **fields)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=201)

    # ------------------------------------------------------------ training

    @app.post(
        "/train-async/{job_id}",
        status_code=202,
        response_model=Job,
        responses=_errors(400, 404, 409, 422, 429),
    )
    def train_async(
        job_id: str,
        overrides: dict[str, Any] | None = Body(  # noqa: B008
            None, description='train.* overrides, e.g. {"epochs": 1, "imgsz": 320}', examples=[{"epochs": 1}]
        ),
        owner: str = Depends(caller),
    ) -> Job:
        """Queue a training of the job's dataset; poll `GET /jobs/{job_id}`."""
        record = own_job(job_id, owner)
        if State(record["state"]) not in TRAINABLE:
            raise ApiError(409, "not_trainable", f"job {job_id} is {record['state']}: only a ready (or finished) "
                           "dataset can be trained")  # fmt: skip
        try:
            job_params(record["classes"], overrides)
        except VisError as exc:
            raise ApiError(422, "invalid_override", str(exc)) from None
        active = sum(1 for other in _records(owner) if State(other["state"]) in ACTIVE)
        if active >= settings.max_queued_jobs:
            raise ApiError(
                429, "too_many_jobs", f"{active} trainings of this token are queued or running: wait for one"
            )
        if store.exists(job_id, jobs.CANCEL_FILE):
            store.fs.rm(store.path(job_id, jobs.CANCEL_FILE))
        attempt = int(record["attempt"]) + 1

        def queued(r: dict[str, Any]) -> dict[str, Any]:
            if State(r["state"]) not in TRAINABLE:
                raise Conflict(f"job {job_id} is {r['state']}")
            return jobs.move(r, State.queued, attempt=attempt, overrides=overrides or {}, progress=None,
                             error=None, metrics=None, mlflow_run_id=None)  # fmt: skip

        try:
            record = jobs.update(store, job_id, queued)
        except Conflict as exc:
            raise ApiError(409, "not_trainable", str(exc)) from None
        queue.train(job_id, attempt)
        return Job(**jobs.public(record))

    @app.post("/jobs/{job_id}/cancel", status_code=202, response_model=Job, responses=_errors(404, 409))
    def cancel(job_id: str, owner: str = Depends(caller)) -> Job:
        """Stop a queued or running training; a running one keeps its last checkpoint."""
        record = own_job(job_id, owner)
        if State(record["state"]) not in ACTIVE:
            raise ApiError(409, "not_active", f"job {job_id} is {record['state']}: nothing to cancel")
        store.create(job_id, jobs.CANCEL_FILE, b"requested")

        def stop_queued(r: dict[str, Any]) -> dict[str, Any] | None:
            return jobs.move(r, State.cancelled) if r["state"] == State.queued else None

        return Job(**jobs.public(jobs.update(store, job_id, stop_queued)))

    # ------------------------------------------------------------ reading

    def _records(owner: str) -> Iterator[dict[str, Any]]:
        for job_id in store.job_ids():
            record = store.read_json(job_id)
            if record and record.get("owner") == owner:
                yield record

    @app.get("/jobs/{job_id}", response_model=Job, responses=_errors(404))
    async def get_job(job_id: str, owner: str = Depends(caller)) -> Job:
        """A job: state, progress (epoch n/N and its metrics), MLflow run, timings, error."""
        # The most polled route, so async: a plain function would cost two hops to the thread pool (the call and
        # the answer's validation), more than the read of a local record itself. An S3 read goes to a thread.
        record = own_job(job_id, owner) if store.local else await asyncio.to_thread(own_job, job_id, owner)
        return Job(**jobs.public(record))

    @app.get("/jobs", response_model=JobPage)
    def list_jobs(
        limit: int = Query(50, ge=1, le=500),
        after: str | None = Query(None, description="the `next` of the previous page"),
        owner: str = Depends(caller),
    ) -> JobPage:
        """This token's jobs, oldest first, a page at a time."""
        records = sorted(_records(owner), key=lambda r: (r["created_at"], r["id"]))
        if after is not None:
            ids = [r["id"] for r in records]
            records = records[ids.index(after) + 1 :] if after in ids else []
        page = records[:limit]
        more = len(records) > limit
        return JobPage(jobs=[Job(**jobs.public(r)) for r in page], next=page[-1]["id"] if more else None)

    @app.get(
        "/download/model/{job_id}",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, **_errors(404, 409)},
    )
    def download_model(job_id: str, owner: str = Depends(caller)) -> StreamingResponse:
        """The trained weights (`best.pt`, Ultralytics' format)."""
        record = own_job(job_id, owner)
        if record["state"] != State.succeeded:
            raise ApiError(
                409, "not_finished", f"job {job_id} is {record['state']}: the model exists once it succeeded"
            )
        return _stream(store.reader(job_id, f"{MODEL}/weights/best.pt"), f"{job_id}-best.pt")

    @app.get("/dataset/metadata/{job_id}", response_model=dict[str, Any], responses=_errors(404, 409))
    def dataset_metadata(job_id: str, owner: str = Depends(caller)) -> JSONResponse:
        """The dataset's `dataset_metadata.json` (statistics and fingerprint)."""
        record = own_job(job_id, owner)
        if not store.exists(job_id, f"{METADATA}/dataset_metadata.json"):
            raise ApiError(
                409, "no_metadata", f"job {job_id} is {record['state']}: metadata exists once the dataset is ready"
            )
        with store.reader(job_id, f"{METADATA}/dataset_metadata.json") as handle:
            return JSONResponse(json.loads(handle.read()))

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """The store, the queue and the tracking server, each with a verdict."""
        checks = {"store": _check(store.check), "queue": _check(queue.health), "tracking": _check(_tracking)}
        return Health(ok=all(c.ok for c in checks.values()), **checks)

    # ------------------------------------------------------------ the registry's face

    def registry() -> Path:
        """The repository whose versions the service serves: the one it runs from (409 outside any)."""
        from visapp.integrations import git

        here = Path.cwd()
        if not git.is_repository(here):
            raise ApiError(
                409, "no_registry", "the service does not run from a Git repository, so it has no model versions: "
                "start `visapp serve` in the project's repository (a clone with its tags and DVC remote)"
            )  # fmt: skip
        return here

    @app.get("/models", response_model=list[ModelVersion], responses=_errors(409))
    def models(owner: str = Depends(caller)) -> list[ModelVersion]:
        """Released model versions and their stages (the Git tags of the repository the service runs from)."""
        from visapp.registry.versions import list_versions

        registry()
        try:
            return [ModelVersion(**row) for row in list_versions(".")]
        except VisError as exc:
            raise ApiError(409, "no_registry", str(exc)) from None

    @app.get(
        "/models/{version}/download",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, **_errors(404, 409)},
    )
    def download_version(version: str, owner: str = Depends(caller)) -> StreamingResponse:
        """A released version's weights (`v1.2.0`, `yolo@v1.2.0`, or a stage's: `yolo#prod`, `yolo%23prod` in the
        URL), from the DVC cache or remote."""
        from visapp.registry.versions import get_model

        registry()
        folder = Path(
            tempfile.mkdtemp(
                prefix="visapp-model-", dir=settings.work_dir.parent if settings.work_dir.parent.is_dir() else None
            )
        )
        try:
            path = get_model(".", version, folder / "best.pt")
        except VisError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ApiError(404, "unknown_version", str(exc)) from None
        handle = path.open("rb")
        return _stream(handle, f"{version.replace('@', '-')}-best.pt", cleanup=folder)

    return app


# ---------------------------------------------------------------- helpers


def _parse_classes(text: str | None) -> list[str] | None:
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


def _clean(scratch: Path) -> None:
    discard(scratch)
    with contextlib.suppress(OSError):  # the job's scratch folder, unless a worker of this machine uses it too
        scratch.parent.rmdir()


def _codes(report: dict[str, Any]) -> str:
    errors = {i["code"] for i in report["issues"] if i["severity"] == "error"}
    return ", ".join(f"{code} {n}" for code, n in report["by_code"].items() if code in errors)


def _check(probe: Any) -> Check:
    try:
        return Check(ok=True, detail=str(probe()))
    except Exception as exc:
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}")


def _tracking() -> str:
    from visapp.composition import default_params
    from visapp.training import tracking

    uri = tracking.resolve_uri(default_params().tracking)
    tracking.check_reachable(uri)
    return f"reachable ({uri})"


def _stream(handle: Any, name: str, cleanup: Path | None = None) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        try:
            while block := handle.read(CHUNK):
                yield block
        finally:
            handle.close()
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)

    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


__all__ = ["FINISHED", "create_app"]
