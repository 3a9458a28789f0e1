"""The HTTP face: the app, made of one router per resource (uploads, jobs, models, health), behind the token.

Requests carry `Authorization: Bearer <token>` (`VISAPP_API_TOKEN`, compared in constant time): a request
without a valid one gets 401 before its body is read. The app holds no state of its own: every job lives in the
job store, so API processes can be restarted or run side by side. `/docs` and `/redoc` serve their own assets
(from the installed fastapi-offline package): they work without internet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from visapp.errors import VisError
from visapp.service import pages
from visapp.service.api import health, jobs, models, uploads
from visapp.service.api.common import STATUS_CODES, UNAUTHORIZED, ApiError, Context, error_response, errors, identify
from visapp.service.pages.render import error_page, sign_in_redirect
from visapp.service.pages.routes import install as install_pages
from visapp.service.pages.session import Sessions
from visapp.service.params import nearest_key
from visapp.service.settings import ServiceSettings

log = logging.getLogger(__name__)

DOCS, REDOC, OPENAPI, DOCS_ASSETS = "/docs", "/redoc", "/openapi.json", "/docs-assets"
# Answered without a token: the health verdict, and the API's description (the schema, its two viewers and their
# assets), which holds no job and no data.
PUBLIC_PATHS = frozenset({"/health", DOCS, f"{DOCS}/oauth2-redirect", REDOC, OPENAPI})
PAGE_MESSAGES = {404: "There is no such page: check the address, or start from the jobs.",
                 405: "This page does not take that kind of request: start from the jobs."}  # fmt: skip


def is_public(path: str) -> bool:
    """Whether a path is answered without a token (the health verdict, the API's description and its assets)."""
    return path in PUBLIC_PATHS or path.startswith(DOCS_ASSETS + "/")


class Authenticate:
    """A request to any path but the public ones without a valid token gets 401 at once: before its body is read,
    an upload slot is taken or its parameters are validated (an unauthenticated caller can neither make the server
    spool a large body nor keep the uploads of others out, and learns nothing of the limits or the routes). The
    pages (`visapp.service.pages`) go by their session cookie instead: a request without one is sent to sign in,
    as early."""

    def __init__(self, app: ASGIApp, tokens: tuple[bytes, ...], open_access: bool, sessions: Sessions) -> None:
        self.app, self.tokens, self.open_access, self.sessions = app, tokens, open_access, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and pages.is_page(scope["path"]):
            if pages.needs_session(scope["path"]) and self.sessions.read(Headers(scope=scope)) is None:
                await sign_in_redirect(scope["path"])(scope, receive, send)
                return
        elif scope["type"] == "http" and not is_public(scope["path"]):
            header = Headers(scope=scope).get("authorization", "")
            if identify(header, self.tokens, self.open_access) is None:
                await error_response(401, "unauthorized", UNAUTHORIZED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class UploadGate:
    """Before an upload's body is read (the API's or the upload page's): one whose Content-Length is past
    `max_upload` gets 413, and one past `limit` uploads at once gets 429. (A body sent without a length is stopped
    at `max_upload` bytes as it is read.)"""

    PATHS = frozenset({uploads.UPLOAD_PATH, pages.UPLOAD})

    def __init__(self, app: ASGIApp, limit: int, max_upload: int) -> None:
        self.app, self.limit, self.max_upload, self.active = app, limit, max_upload, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        refuse = error_page if pages.is_page(scope["path"]) else error_response
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_upload:
            await refuse(413, "too_large", uploads.too_large(self.max_upload))(scope, receive, send)
            return
        if self.active >= self.limit:
            message = f"{self.limit} uploads are being received already: retry in a minute"
            await refuse(429, "too_many_uploads", message)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def _validation_message(exc: RequestValidationError) -> str:
    """The first few problems of a request, each with where it is; a misspelt train key with the nearest one."""
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        where = ".".join(loc) or "body"
        if error.get("type") == "extra_forbidden" and loc:
            parts.append(f"{where}: not a train param{nearest_key(loc[-1])}")
        else:
            parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts) or "the request is not valid"


def _allowed(request: Request) -> list[str]:
    """Every method the API answers at this request's path (its schema's paths, matched as the router does)."""
    from starlette.routing import compile_path

    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def create_app(settings: ServiceSettings | None = None, open_access: bool = False, consume: bool = True) -> FastAPI:
    """The service. `open_access`: no token needed (the command line allows it on loopback only); `consume`: run
    one queue consumer in this process, as `visapp serve` does by default. The reaper runs either way."""
    from fastapi_offline import FastAPIOffline

    from visapp.service.predictor import Predictors
    from visapp.service.queue import JobQueue
    from visapp.service.reaper import Reaper
    from visapp.service.serving import load_promoted
    from visapp.service.store import JobStore

    settings = settings or ServiceSettings.from_env()
    if not settings.tokens and not open_access:
        raise VisError("VISAPP_API_TOKEN is not set: set it (a long random string), or run open on loopback")
    store = JobStore(settings.store_url)
    queue = JobQueue(settings, store)
    tokens = tuple(token.encode() for token in settings.tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = Reaper(settings, store, queue)
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

    app = FastAPIOffline(
        title="VIS: Vision Intelligence System",
        version="1",
        summary="Upload a Pascal VOC dataset, train a YOLO detector on it in the background, download the model.",
        lifespan=lifespan,
        responses=errors(401),
        docs_url=DOCS,
        redoc_url=REDOC,
        openapi_url=OPENAPI,
        static_url=DOCS_ASSETS,
        generate_unique_id_function=lambda route: route.name,  # operation ids are the functions' names (links)
    )
    app.state.context = Context(settings, store, queue, tokens, open_access, Predictors(settings.work_dir))
    promoted = load_promoted(settings)  # a version it cannot serve stops the start, with the reason
    if promoted is not None:
        app.state.context.served, app.state.context.served_weights = promoted
    # The last added runs first: the token is checked before an upload takes a slot.
    app.add_middleware(UploadGate, limit=settings.max_concurrent_uploads, max_upload=settings.max_upload)
    sessions = Sessions(tokens)
    app.add_middleware(Authenticate, tokens=tokens, open_access=open_access, sessions=sessions)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if pages.is_page(request.url.path):
            return error_page(exc.status, exc.code, exc.message, sessions.read(request.headers))
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if pages.is_page(request.url.path):
            return error_page(exc.status_code, "", PAGE_MESSAGES.get(exc.status_code, str(exc.detail)),
                              sessions.read(request.headers))  # fmt: skip
        message = str(exc.detail)
        if exc.status_code == 413:
            message = uploads.too_large(settings.max_upload)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the body cannot be read: send JSON (or a multipart form where the route takes a file)"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route; a path may have several
            headers["Allow"] = ", ".join(_allowed(request))
            message = f"{request.method} is not allowed at {request.url.path}: use {headers['Allow']}"
        return error_response(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if pages.is_page(request.url.path):
            return error_page(422, "", _validation_message(exc), sessions.read(request.headers))
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        message = f"an unexpected error ({type(exc).__name__}); see the server's log"
        if pages.is_page(request.url.path):
            return error_page(500, "", message, sessions.read(request.headers))
        return error_response(500, "internal", message)

    for router in (uploads.router, jobs.router, models.router, health.router):
        app.include_router(router)
    install_pages(app, sessions)
    return app
