"""The pages: the service for people, server-rendered (Jinja2), under `/ui`, beside the API and over the same calls.

Sign in with a token of VISAPP_API_TOKEN (a session cookie: `session.py`), then: the jobs, an upload, a job (its
report with thumbnails of the samples it names, figures, lineage, the train form, the training's curve, the
model: download it, try it on an image), the released models. Each route reads the job store and the records
as the API's routes do, or calls the API's route functions themselves (an upload, a training, a cancel, a
download, a prediction), so what a page shows and does is what a client gets. The pages are not in the API's
schema. Templates and static files (a stylesheet, one small script: auto-update and the upload's progress bar;
every page works without it) live in this package; nothing is fetched from elsewhere.
"""

from __future__ import annotations

PREFIX = "/ui"
STATIC = f"{PREFIX}/static"
SIGN_IN = f"{PREFIX}/sign-in"
UPLOAD = f"{PREFIX}/upload"
# Answered without a session: the way in, and what the sign-in page itself needs.
OPEN_PATHS = frozenset({"/", PREFIX, SIGN_IN})


def is_page(path: str) -> bool:
    """Whether a path is the pages' (a session cookie, not a bearer token, says who calls)."""
    return path in ("/", PREFIX) or path.startswith(f"{PREFIX}/")


def needs_session(path: str) -> bool:
    """Whether a page path is only for a signed-in caller (all but the way in and the static files)."""
    return path not in OPEN_PATHS and not path.startswith(f"{STATIC}/")
