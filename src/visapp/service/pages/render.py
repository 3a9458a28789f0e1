"""Templates -> HTML responses, with the headers every page carries; errors as pages, in words."""

from __future__ import annotations

import datetime
import functools
import time
from typing import Any

from starlette.responses import HTMLResponse, RedirectResponse

from visapp.service.pages import SIGN_IN

# Scripts and styles only from the service itself; images also inline (a prediction's drawing); forms post only
# here; no page in a frame.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
TITLES = {400: "The request cannot be used", 401: "Not signed in", 403: "Refused", 404: "Not found",
          405: "Not allowed", 409: "Not now", 413: "Too large", 415: "Not a file this takes",
          422: "Not accepted", 429: "Too many at once", 500: "Something went wrong"}  # fmt: skip


class PageError(Exception):
    """What went wrong, in words, shown as a page with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def age(stamp: float | None) -> str:
    """'5 s ago', '3 min ago', '2 h ago', '4 days ago'."""
    if stamp is None:
        return ""
    seconds = max(0, int(time.time() - stamp))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def iso(stamp: float | None) -> str:
    """A time stamp as ISO 8601 in UTC (a `<time datetime>`), or ""."""
    if stamp is None:
        return ""
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


@functools.cache
def environment() -> Any:
    """The Jinja2 environment of the package's templates (made once): autoescaped, strict about names."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("visapp.service.pages", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(age=age, iso=iso, sentence=sentence, yaml=as_yaml)
    return env


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered with `context`, as an HTML answer with the pages' headers."""
    for name in ("session", "refresh", "nav"):
        context.setdefault(name, None)
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(status: int, code: str, message: str, session: Any = None) -> HTMLResponse:
    """An error as a page: a title for the status, the message (`code`: the API's name for it, not shown)."""
    title = TITLES.get(status, "Something went wrong")
    return page("error.html", status, title=title, message=message, session=session)


def as_yaml(data: Any) -> str:
    """Data as block YAML, in its own order (the params as the job holds them)."""
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))


def sentence(text: str) -> str:
    """A message as a sentence: its first letter a capital (the API's messages start in lower case)."""
    return text[:1].upper() + text[1:] if text else text


def sign_in_redirect(path: str) -> RedirectResponse:
    """To the sign-in page, and back to `path` after it."""
    from urllib.parse import quote

    return RedirectResponse(f"{SIGN_IN}?next={quote(path)}", status_code=303, headers=HEADERS)
