"""The pages' routes: sign in and out, the jobs, an upload, a job (and what it does: train, cancel, predict,
download), the models. Each reads the store and the records as the API's routes do, or calls those routes'
functions; an `ApiError` they raise becomes a page in words (the app's handlers), a form's error is shown on it."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from visapp.config import OnError
from visapp.service.api import jobs, models, uploads
from visapp.service.api.common import ApiError, Context, context, identify, own_job, owned_records, stream
from visapp.service.lineage import lineage
from visapp.service.pages import PREFIX, SIGN_IN, UPLOAD
from visapp.service.pages.charts import charts, curve
from visapp.service.pages.forms import overrides_from, train_fields
from visapp.service.pages.render import HEADERS, PageError, error_page, page
from visapp.service.pages.session import Session, Sessions, new_csrf, same_token
from visapp.service.params import METADATA, THUMBNAILS, VALIDATED, TrainOverrides
from visapp.service.records import ACTIVE, TRAINABLE, JobRecord, State

router = APIRouter(include_in_schema=False)
JOBS_PER_PAGE = 20
ISSUES_PER_PAGE = 25
ACTIVE_REFRESH_S = 3  # how often a page with active work updates itself (its script; a person can stop it)


def sessions(request: Request) -> Sessions:
    """The app's sessions (`install` puts them on its state)."""
    found: Sessions = request.app.state.sessions
    return found


def signed_in(request: Request) -> Session:
    """The session of the request (the `Authenticate` middleware has sent a request without one to sign in)."""
    found = sessions(request).read(request.headers)
    if found is None or found.owner is None:
        raise PageError(401, "sign in first")
    return found


SignedIn = Depends(signed_in)
Ctx = Depends(context)


def checked(session: Session, sent: object) -> None:
    """A form's CSRF token must be the session's: else the form did not come from this session's page."""
    if not isinstance(sent, str) or not same_token(sent, session.csrf):
        raise PageError(403, "the form's security token is missing or not this session's: reload the page and send "
                        "the form again")  # fmt: skip


def https(request: Request) -> bool:
    """Whether the request came over HTTPS (its cookie is then Secure)."""
    return request.url.scheme == "https"


def redirect(path: str) -> RedirectResponse:
    """303 to `path`: after a form, the browser GETs the page it leads to."""
    return RedirectResponse(path, status_code=303, headers=HEADERS)


def job_url(job_id: str, anchor: str = "") -> str:
    """A job's page (at a section when `anchor` names one)."""
    return f"{PREFIX}/jobs/{job_id}" + (f"#{anchor}" if anchor else "")


# ---------------------------------------------------------------- signing in and out


@router.get("/")
@router.get(PREFIX)
def root() -> RedirectResponse:
    """The service's address leads to the pages."""
    return redirect(f"{PREFIX}/")


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of this service, else the jobs."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


def _sign_in_form(request: Request, ctx: Context, status: int = 200, error: str | None = None,
                  notice: str | None = None, target: str | None = None) -> Response:  # fmt: skip
    """The sign-in form, with a new CSRF token in it and in its cookie."""
    csrf = new_csrf()
    response = page("sign_in.html", status, error=error, notice=notice, next=_safe_next(target), csrf=csrf,
                    open_access=ctx.open_access and not ctx.tokens)  # fmt: skip
    sessions(request).sign_in_cookie(response, csrf, https(request))
    return response


@router.get(SIGN_IN)
def sign_in_page(request: Request, next: str | None = None, signed_out: bool = False, ctx: Context = Ctx) -> Response:
    """The sign-in form (or, signed in already, where the person was going)."""
    if sessions(request).read(request.headers) is not None:
        return redirect(_safe_next(next))
    return _sign_in_form(request, ctx, notice="You have signed out." if signed_out else None, target=next)


@router.post(SIGN_IN)
async def sign_in(request: Request, ctx: Context = Ctx) -> Response:
    """Check the form's CSRF token and the token given; start a session and go where the person was going."""
    form = await request.form()
    target = str(form.get("next") or "")
    expected = sessions(request).read_sign_in(request.headers)
    if expected is None or not same_token(str(form.get("csrf") or ""), expected.csrf):
        return _sign_in_form(request, ctx, 403, "The sign-in form had expired or did not come from this page: "
                             "enter the token again.", target=target)  # fmt: skip
    owner = identify(f"Bearer {form.get('token') or ''}", ctx.tokens, ctx.open_access)
    if owner is None:
        return _sign_in_form(request, ctx, 401, "That is not a token of this service: check it (VISAPP_API_TOKEN "
                             "holds the service's tokens) and try again.", target=target)  # fmt: skip
    response = redirect(_safe_next(target))
    sessions(request).start(response, owner, https(request))
    return response


@router.post(f"{PREFIX}/sign-out")
async def sign_out(request: Request, session: Session = SignedIn) -> Response:
    """End the session (its cookie deleted, its id refused here) and say so on the sign-in page."""
    checked(session, (await request.form()).get("csrf"))
    response = redirect(f"{SIGN_IN}?signed_out=true")
    sessions(request).end(response, session, https(request))
    return response


# ---------------------------------------------------------------- the jobs


@router.get(f"{PREFIX}/")
def jobs_page(page_number: int = Query(1, alias="page", ge=1), session: Session = SignedIn,
              ctx: Context = Ctx) -> Response:  # fmt: skip
    """The caller's jobs, newest first, a page at a time."""
    assert session.owner is not None
    found = sorted(owned_records(ctx, session.owner), key=lambda r: (r.created_at, r.id), reverse=True)
    pages = max(1, -(-len(found) // JOBS_PER_PAGE))
    shown = found[(page_number - 1) * JOBS_PER_PAGE : page_number * JOBS_PER_PAGE]
    active = any(record.state in ACTIVE for record in shown)
    refresh = ACTIVE_REFRESH_S if active else None
    return page("jobs.html", nav="jobs", session=session, jobs=shown, page_number=page_number, pages=pages,
                total=len(found), refresh=refresh)  # fmt: skip


# ---------------------------------------------------------------- an upload


@router.get(UPLOAD)
def upload_page(session: Session = SignedIn) -> Response:
    """The upload form."""
    return page("upload.html", nav="upload", session=session, error=None, classes="", on_error="fail")


@router.post(UPLOAD)
async def upload(
    request: Request,
    file: UploadFile | None = File(None),  # noqa: B008
    classes: str = Form(""),
    on_error: str = Form("fail"),
    csrf: str = Form(""),
    session: Session = SignedIn,
    ctx: Context = Ctx,
) -> Response:
    """The API's upload, from the form: to the job's page when a job was made (ready, or rejected with its
    report), else the form again with what is wrong."""
    checked(session, csrf)

    def again(status: int, error: str) -> Response:
        return page("upload.html", status, nav="upload", session=session, error=error, classes=classes,
                    on_error=on_error)  # fmt: skip

    if file is None or not file.filename:
        return again(422, "Choose the dataset's file (a ZIP or a tar) first.")
    if on_error not in {str(choice) for choice in OnError}:
        return again(422, "Choose what to do with a rejected sample: fail or skip.")
    try:
        answer = await uploads.upload_dataset(file=file, classes=classes or None, on_error=OnError(on_error),
                                              owner=session.owner or "", ctx=ctx)  # fmt: skip
    except ApiError as exc:
        if exc.extra.get("job_id"):  # a job was made: its page says why it was rejected, with the report
            return redirect(job_url(str(exc.extra["job_id"])))
        return again(exc.status, exc.message)
    return redirect(job_url(json.loads(bytes(answer.body))["job_id"]))


# ---------------------------------------------------------------- a job


def _report_view(report: dict[str, Any] | None, code: str | None, page_number: int) -> dict[str, Any] | None:
    if report is None:
        return None
    issues = [issue for issue in report.get("issues", []) if not code or issue.get("code") == code]
    pages = max(1, -(-len(issues) // ISSUES_PER_PAGE))
    start = (min(page_number, pages) - 1) * ISSUES_PER_PAGE
    return {"summary": report, "codes": sorted(report.get("by_code", {})), "code": code or "",
            "issues": issues[start : start + ISSUES_PER_PAGE], "matching": len(issues), "page": min(page_number, pages),
            "pages": pages}  # fmt: skip


def _job_page(ctx: Context, session: Session, record: JobRecord, status: int = 200, code: str | None = None,
              report_page: int = 1, train_errors: dict[str, str] | None = None, train_error: str | None = None,
              sent: dict[str, str] | None = None) -> Response:  # fmt: skip
    store = ctx.store
    metadata = store.read_json(record.id, f"{METADATA}/dataset_metadata.json")
    current = record.current_attempt()
    epochs = (record.progress.epochs if record.progress else None) or (
        current.params.get("train", {}).get("epochs") if current else None
    )
    attempts = sorted(record.attempts, key=lambda a: a.number, reverse=True)
    points = curve(record.attempts, record.training)
    return page(
        "job.html",
        status,
        session=session,
        job=record,
        active=record.state in ACTIVE,
        refresh=ACTIVE_REFRESH_S if record.state in ACTIVE else None,
        trainable=record.state in TRAINABLE,
        report=_report_view(store.read_json(record.id, f"{VALIDATED}/report.json"), code, report_page),
        thumbnails=store.read_json(record.id, f"{THUMBNAILS}/index.json"),
        figures=list((metadata or {}).get("figures") or []),
        lineage=lineage(record, None) if record.state not in (State.uploaded, State.validating) else None,
        fields=train_fields(record.params.get("train", {}), train_errors, sent) if record.state in TRAINABLE else [],
        train_error=train_error,
        charts=charts(points, epochs),
        points=points,
        attempts=attempts,
        latest=record.latest_model(),
    )


@router.get(PREFIX + "/jobs/{job_id}")
def job_page(job_id: str, code: str | None = None, report_page: int = Query(1, alias="page", ge=1),
             session: Session = SignedIn, ctx: Context = Ctx) -> Response:  # fmt: skip
    """A job's page (`code`: only the report's issues of that code)."""
    assert session.owner is not None
    return _job_page(ctx, session, own_job(ctx, job_id, session.owner), code=code, report_page=report_page)


@router.post(PREFIX + "/jobs/{job_id}/train")
async def train(request: Request, job_id: str, session: Session = SignedIn, ctx: Context = Ctx) -> Response:
    """The API's training request, with the form's values that differ from the job's params as its overrides."""
    assert session.owner is not None
    form = {key: str(value) for key, value in (await request.form()).items()}
    checked(session, form.get("csrf"))
    record = own_job(ctx, job_id, session.owner)
    asked, errors = overrides_from(form, record.params.get("train", {}))
    if errors:
        return _job_page(ctx, session, record, 422, train_errors=errors, sent=form,
                         train_error="Some values cannot be used: see the fields marked below.")  # fmt: skip
    try:
        await asyncio.to_thread(jobs.train_async, job_id, TrainOverrides.model_validate(asked), session.owner, ctx)
    except ApiError as exc:
        return _job_page(ctx, session, own_job(ctx, job_id, session.owner), exc.status, train_error=exc.message,
                         sent=form)  # fmt: skip
    return redirect(job_url(job_id, "training"))


@router.post(PREFIX + "/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, session: Session = SignedIn, ctx: Context = Ctx) -> Response:
    """The API's cancel, from the job's page."""
    checked(session, (await request.form()).get("csrf"))
    await asyncio.to_thread(jobs.cancel, job_id, session.owner or "", ctx)
    return redirect(job_url(job_id))


@router.get(PREFIX + "/jobs/{job_id}/model")
def job_model(job_id: str, attempt: int | None = Query(None, ge=1), session: Session = SignedIn,
              ctx: Context = Ctx) -> StreamingResponse:  # fmt: skip
    """A training's weights (the API's `GET /download/model/{id}`)."""
    return jobs.download_model(job_id, attempt, session.owner or "", ctx)


@router.get(PREFIX + "/jobs/{job_id}/figures/{name}")
def job_figure(job_id: str, name: str, session: Session = SignedIn, ctx: Context = Ctx) -> StreamingResponse:
    """A figure of the job's metadata (the API's `GET /jobs/{id}/figures/{name}`)."""
    return jobs.job_figure(job_id, name, session.owner or "", ctx)


@router.get(PREFIX + "/jobs/{job_id}/thumbnails/{name}")
def thumbnail(job_id: str, name: str, session: Session = SignedIn, ctx: Context = Ctx) -> StreamingResponse:
    """A thumbnail of a sample the job's report names (one its `thumbnails/index.json` lists)."""
    record = own_job(ctx, job_id, session.owner or "")
    index = ctx.store.read_json(record.id, f"{THUMBNAILS}/index.json") or {}
    if name not in {sample["file"] for sample in index.get("samples", [])}:
        raise PageError(404, f"job {job_id} has no thumbnail {name!r}")
    return stream(ctx.store.reader(job_id, f"{THUMBNAILS}/{name}"), name, "image/png")


@router.post(PREFIX + "/jobs/{job_id}/predict")
async def predict(
    job_id: str,
    image: UploadFile | None = File(None),  # noqa: B008
    confidence: str = Form("0.25"),
    csrf: str = Form(""),
    session: Session = SignedIn,
    ctx: Context = Ctx,
) -> Response:
    """The API's prediction with the job's model; the image shown with the boxes drawn, and listed."""
    checked(session, csrf)
    record = own_job(ctx, job_id, session.owner or "")

    def shown(status: int, **found: Any) -> Response:
        return page("predict.html", status, session=session, job=record, confidence=confidence, **found)

    if image is None or not image.filename:
        return shown(422, error="Choose an image first.")
    try:
        level = float(confidence)
    except ValueError:
        level = -1.0
    if not 0 < level <= 1:
        return shown(422, error="The confidence is a number above 0 and at most 1 (0.25 shows the likely boxes).")
    try:
        answer = await asyncio.to_thread(jobs.predict_job, job_id, image, level, None, session.owner or "", ctx)
    except ApiError as exc:
        return shown(exc.status, error=exc.message)
    drawing = await asyncio.to_thread(_drawn, ctx, image, answer.boxes, record.classes or [])
    return shown(200, answer=answer, drawing=drawing, filename=image.filename)


def _drawn(ctx: Context, image: UploadFile, boxes: list[dict[str, Any]], classes: list[str]) -> str | None:
    """The image with the boxes drawn, as a data: URL (a PNG of `THUMBNAIL_PX` on its longer side)."""
    from visapp.dataset.thumbnails import draw_boxes

    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="predict-", dir=ctx.settings.work_dir) as folder:
        path = Path(folder) / "image"
        image.file.seek(0)
        path.write_bytes(image.file.read())
        png = draw_boxes(path, boxes, classes)
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


# ---------------------------------------------------------------- the models


@router.get(f"{PREFIX}/models")
async def models_page(session: Session = SignedIn) -> Response:
    """The released versions (the API's `GET /models`), with the metrics their tags hold."""
    from visapp.registry.export import has_onnx

    try:
        versions = await asyncio.to_thread(models.models, session.owner or "")
        error = None
    except ApiError as exc:
        versions, error = [], exc.message
    rows = []
    for version in versions:
        row = version.model_dump()
        metrics = next((line for line in str(row.get("message") or "").splitlines() if line.startswith("metrics: ")),
                       "")  # fmt: skip
        try:
            row["metrics"] = json.loads(metrics.removeprefix("metrics: ")) if metrics else {}
        except ValueError:
            row["metrics"] = {}
        row["link"] = quote(str(row.get("tag") or row["version"]), safe="@")
        row["onnx"] = has_onnx(Path(), str(row.get("name") or ""), str(row["version"]))
        rows.append(row)
    return page("models.html", nav="models", session=session, versions=rows, error=error)


@router.get(PREFIX + "/models/{version}/download")
def model_download(version: str, format: Literal["pt", "onnx"] = "pt", session: Session = SignedIn,
                   ctx: Context = Ctx) -> StreamingResponse:  # fmt: skip
    """A released version's weights or ONNX export (the API's `GET /models/{version}/download`)."""
    return models.download_version(version, format, session.owner or "", ctx)


def install(app: FastAPI, sessions_made: Sessions) -> None:
    """The pages on `app`: their routes, static files and sessions, and their errors as pages."""
    from fastapi.staticfiles import StaticFiles

    from visapp.service.pages import STATIC

    app.state.sessions = sessions_made
    app.include_router(router)
    app.mount(STATIC, StaticFiles(packages=[("visapp.service.pages", "static")]), name="pages-static")

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return error_page(exc.status, "", exc.message, sessions(request).read(request.headers))
