"""GET /health: the store, the queue and the tracking server, each with a verdict, and the model served (no token
needed)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from pydantic import BaseModel

from visapp.service.api.common import Context, Ctx
from visapp.service.serving import ServedModel

router = APIRouter()


class Check(BaseModel):
    """One part of the service: whether it answers, and what it said."""

    ok: bool
    detail: str


class Health(BaseModel):
    """The service's health: the store, the queue and the tracking server, and the model it serves."""

    ok: bool
    store: Check
    queue: Check
    tracking: Check
    model: ServedModel | None  # the promoted model served (VISAPP_MODEL_VERSION), or none


def _check(probe: Callable[[], object]) -> Check:
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


@router.get("/health", response_model=Health)
def health(ctx: Context = Ctx) -> Health:
    """The store, the queue and the tracking server, each with a verdict; the promoted model served, if any."""
    checks = {"store": _check(ctx.store.check), "queue": _check(ctx.queue.health), "tracking": _check(_tracking)}
    return Health(ok=all(c.ok for c in checks.values()), model=ctx.served, **checks)
