"""A job's record: one typed model that the API, the worker, the reaper, the store and the trainer all read.

    uploaded -> validating -> rejected | ready | failed
    ready | succeeded | failed | cancelled -> queued -> running -> succeeded | failed | cancelled

A job is an uploaded dataset and the trainings of it. Its upload is checked once (a re-check after the process
checking it died is the same check again); each training request is a new *training*, and each run of a
training on a worker an *attempt* (a training whose worker died resumes as the next attempt, from the last
checkpoint). The record is written whole (`job.json`), stamped with the time, and every state entered is kept in
`transitions`.

Who writes what, so that writers never undo each other: the API creates the record, queues work and accepts a
cancel; the process holding the lease of the current check or attempt writes while it works; the reaper writes
only after winning an exclusive object of the store (`requeues/...`). A cancel request is its own object
(`cancel`), never a record write.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visapp.config import OnError
from visapp.errors import VisError
from visapp.service.store import RECORD, JobStore, UnknownJob
from visapp.training.results import Metrics


class State(enum.StrEnum):
    """Where a job stands; `NEXT` says which state may follow which."""

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
FINISHED = frozenset({S.rejected, S.ready, S.succeeded, S.failed, S.cancelled})  # nothing works on the job
ACTIVE = frozenset({S.uploaded, S.validating, S.queued, S.running})
CANCEL_FILE = "cancel"


class Conflict(VisError):
    """The job is not in a state that allows this (e.g. training a rejected dataset)."""


def now() -> float:
    """The time now, as the record stamps it (seconds since the epoch, to the millisecond)."""
    return round(time.time(), 3)


class Record(BaseModel):
    """The base of the record's parts: unknown fields are refused, so that a typo is an error, not a new field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Transition(Record):
    """A state the job entered, when, and at which training."""

    state: State
    at: float
    training: int  # which training the job was at (0: before any)


class Lease(Record):
    """Who works on the job now: the process that won `leases/<task>-<n>`, renewing `heartbeat_at`."""

    task: Literal["check", "train"]
    number: int  # the check or the attempt the lease is for
    worker: str  # host:pid:thread of the holder (never shown to clients)
    heartbeat_at: float


class Progress(Record):
    """What the current work is doing: a phase in words, and for a training the epoch and its numbers."""

    phase: str
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class EpochMetrics(Record):
    """An epoch's numbers as the training told them (losses, precision, recall, mAP): a point of its curve."""

    epoch: int
    metrics: dict[str, float]


MAX_EPOCH_POINTS = 1000  # past this, every other older point goes: a long training's record stays small


def add_epoch(points: list[EpochMetrics], point: EpochMetrics) -> None:
    """Append an epoch's numbers (an epoch told again after a resume replaces its point), thinned past the limit."""
    points[:] = [p for p in points if p.epoch < point.epoch] + [point]
    if len(points) > MAX_EPOCH_POINTS:
        points[:] = points[:-1:2] + points[-1:]


class Upload(Record):
    """The uploaded archive: the client's file name, its size, and its name in the job's folder."""

    filename: str
    bytes: int
    stored_as: str  # the archive's name in the job's folder: upload.zip or upload.tar


class DatasetFolder(Record):
    """Which folder of the archive was taken as the dataset, and what the choice passed over."""

    root: str  # relative to the archive's top ("" for the top itself)
    notes: list[str] = Field(default_factory=list)


class ValidationSummary(Record):
    """validate's counts for the upload (report.json's), and what on_error=skip left out."""

    samples: int
    accepted: int
    rejected: int
    warnings: int
    by_code: dict[str, int]
    left_out: dict[str, int] = Field(default_factory=dict)  # on_error=skip: rejected samples by error code


class MetadataSummary(Record):
    """The dataset's fingerprint and DVC hash, and its images and objects (per split: images)."""

    fingerprint: str
    raw_dvc_hash: str | None
    images: int
    objects: int | None
    splits: dict[str, int | None]


class CodeVersion(Record):
    """The code that did the work: the package's version and, where known, the commit it was built from."""

    package: str
    commit: str | None


class Attempt(Record):
    """One run of a training on a worker."""

    number: int
    training: int
    state: State
    resumes: int | None = None  # the attempt whose checkpoint it continues from
    overrides: dict[str, Any]  # the training's train.* overrides, as requested
    params: dict[str, Any]  # the training's params, composed once at its request: the job's + the overrides
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    epochs_done: int = 0
    epoch_metrics: list[EpochMetrics] = Field(default_factory=list)  # each epoch's numbers, as they came
    metrics: Metrics | None = None  # metrics.json of the training
    mlflow_run_id: str | None = None
    model: bool = False  # its best.pt is in the store (`models/<number>/`)
    worker_code: CodeVersion | None = None
    error: str | None = None


class JobRecord(Record):
    """A job: its upload and check, its trainings and their attempts, who works on it, and where it stands."""

    id: str
    owner: str  # a hash of the token that made it (never shown to clients)
    state: State
    created_at: float
    updated_at: float
    transitions: list[Transition]
    code: CodeVersion  # the API's, when the job was made
    upload: Upload
    on_error: OnError = OnError.fail
    classes_given: list[str] | None = None
    # The params the upload is checked with, composed once at the request: conf/ + classes + on_error (data.classes
    # empty until the check reads the names from the annotations, when none were given). Paths are set per use.
    params: dict[str, Any]
    checks: int = 0  # how many times the upload's check was started (a re-check after a dead process: more)
    dataset: DatasetFolder | None = None
    classes: list[str] | None = None
    validation: ValidationSummary | None = None
    metadata: MetadataSummary | None = None
    training: int = 0  # how many trainings were requested
    attempt: int = 0  # the current (newest) attempt
    attempts: list[Attempt] = Field(default_factory=list)
    lease: Lease | None = None
    progress: Progress | None = None
    mlflow_run_id: str | None = None
    metrics: Metrics | None = None  # metrics.json of the training
    error: str | None = None  # why the job was rejected or failed, in words a client can act on
    note: str | None = None

    # ------------------------------------------------------------ transitions

    def move(self, state: State, **changes: Any) -> JobRecord:
        """Enter `state` (checked against the machine) with `changes` set; the entry goes into `transitions`."""
        if state != self.state and state not in NEXT[self.state]:
            raise Conflict(f"job {self.id} is {self.state}; it cannot become {state}")
        for name, value in changes.items():
            setattr(self, name, value)
        if state != self.state:
            self.transitions.append(Transition(state=state, at=now(), training=self.training))
            self.state = state
        return self

    def current_attempt(self) -> Attempt | None:
        """The newest attempt, or None before any training."""
        return next((a for a in self.attempts if a.number == self.attempt), None)

    def latest_model(self) -> Attempt | None:
        """The newest attempt that succeeded and stored its model."""
        done = [a for a in self.attempts if a.state == State.succeeded and a.model]
        return done[-1] if done else None

    @property
    def history(self) -> dict[str, float]:
        """When each state was last entered."""
        return {str(t.state): t.at for t in self.transitions}


def new_record(job_id: str, owner: str, upload: Upload, params: dict[str, Any], code: CodeVersion,
               on_error: OnError, classes: list[str] | None) -> JobRecord:  # fmt: skip
    """The record of a new upload (state `uploaded`)."""
    stamp = now()
    return JobRecord(
        id=job_id,
        owner=owner,
        state=State.uploaded,
        created_at=stamp,
        updated_at=stamp,
        transitions=[Transition(state=State.uploaded, at=stamp, training=0)],
        code=code,
        upload=upload,
        on_error=on_error,
        classes_given=classes,
        params=params,
    )


# ---------------------------------------------------------------- the store


def parse(data: bytes | dict[str, Any]) -> JobRecord:
    """A record from its JSON (bytes) or from plain data."""
    return JobRecord.model_validate_json(data) if isinstance(data, bytes) else JobRecord.model_validate(data)


def load(store: JobStore, job_id: str) -> JobRecord:
    """The job's record; `UnknownJob` when there is none."""
    data = store.read_bytes(job_id, RECORD) if store.has_job(job_id) else None
    if data is None:
        raise UnknownJob(f"no job {job_id}")
    return parse(data)


def save(store: JobStore, record: JobRecord) -> JobRecord:
    """Write the record whole, stamped with the time."""
    record.updated_at = now()
    store.write_json(record.id, record.model_dump(mode="json"), RECORD)
    return record


def update(store: JobStore, job_id: str, change: Callable[[JobRecord], JobRecord | None]) -> JobRecord:
    """Read, change (in place; return None to leave the record as it was), write: under the store's lock."""
    with store.locked(job_id):
        record = load(store, job_id)
        before = record.model_copy(deep=True)
        if change(record) is None:
            return before
        return save(store, record)


def cancel_requested(store: JobStore, job_id: str) -> bool:
    """Whether a client asked to cancel the job's work."""
    return store.exists(job_id, CANCEL_FILE)
