"""A job's record and its state machine.

    uploaded -> validating -> rejected | ready -> queued -> running -> succeeded | failed | cancelled

A finished job (ready, succeeded, failed, cancelled) can be queued again (a new training on the same dataset);
a running job whose worker died goes back to queued (the reaper, visapp.service.worker). Every change is one
whole write of `job.json`, stamped with the time; each state's first entry time is kept in `history`.

Who writes what, so that writers never undo each other: the API creates the record and queues it; the worker
holding the lease of the current attempt writes while it runs; the reaper writes only after winning the
exclusive `requeues/<attempt>` object. A cancel request is its own object (`cancel`), never a record write.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from visapp.errors import VisError
from visapp.service.store import RECORD, JobStore, UnknownJob


class State(enum.StrEnum):
    uploaded = "uploaded"
    validating = "validating"
    rejected = "rejected"
    ready = "ready"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


S = State
NEXT: dict[State, frozenset[State]] = {
    S.uploaded: frozenset({S.validating, S.failed}),
    S.validating: frozenset({S.rejected, S.ready, S.failed}),
    S.rejected: frozenset(),
    S.ready: frozenset({S.queued}),
    S.queued: frozenset({S.running, S.cancelled, S.failed}),
    S.running: frozenset({S.succeeded, S.failed, S.cancelled, S.queued}),
    S.succeeded: frozenset({S.queued}),
    S.failed: frozenset({S.queued}),
    S.cancelled: frozenset({S.queued}),
}
TRAINABLE = frozenset({S.ready, S.succeeded, S.failed, S.cancelled})
FINISHED = frozenset({S.rejected, S.succeeded, S.failed, S.cancelled})
ACTIVE = frozenset({S.queued, S.running})
CANCEL_FILE = "cancel"


class Conflict(VisError):
    """The job is not in a state that allows this (e.g. training a rejected dataset)."""


def now() -> float:
    return round(time.time(), 3)


def new_record(job_id: str, owner: str, **fields: Any) -> dict[str, Any]:
    stamp = now()
    return {
        "id": job_id,
        "state": str(S.uploaded),
        "created_at": stamp,
        "updated_at": stamp,
        "history": {str(S.uploaded): stamp},
        "owner": owner,
        "attempt": 0,
        "lease": None,
        "progress": None,
        "mlflow_run_id": None,
        "error": None,
        **fields,
    }


def load(store: JobStore, job_id: str) -> dict[str, Any]:
    record = store.read_json(job_id) if store.has_job(job_id) else None
    if record is None:
        raise UnknownJob(f"no job {job_id}")
    return record


def save(store: JobStore, record: dict[str, Any]) -> dict[str, Any]:
    record["updated_at"] = now()
    store.write_json(record["id"], record, RECORD)
    return record


def move(record: dict[str, Any], state: State, **fields: Any) -> dict[str, Any]:
    """The record in `state` (checked against the machine), with `fields` set."""
    current = State(record["state"])
    if state != current and state not in NEXT[current]:
        raise Conflict(f"job {record['id']} is {current}; it cannot become {state}")
    record.update(fields, state=str(state))
    record.setdefault("history", {}).setdefault(str(state), now())
    return record


def update(store: JobStore, job_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
    """Read, change (in place, or return None to leave it), write: under the store's lock."""
    with store.locked(job_id):
        record = load(store, job_id)
        if change(record) is None:
            return record
        return save(store, record)


def cancel_requested(store: JobStore, job_id: str) -> bool:
    return store.exists(job_id, CANCEL_FILE)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a record (the owner's token hash stays inside)."""
    return {key: value for key, value in record.items() if key != "owner"}
