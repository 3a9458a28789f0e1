"""The lease of one piece of work on a job (the check of its upload, or one attempt of a training).

Huey delivers a message at most once, so a process killed mid-work would lose it; and the API checks small
uploads itself, so its death would leave a job `validating` for good. Hence a lease: the process that starts
check N or attempt N of a job creates `leases/<task>-N` in the store (exclusively: one winner), puts itself in the
record's `lease` and renews its heartbeat every `VISAPP_HEARTBEAT_S`. The reaper (`visapp.service.reaper`) takes
over a job whose heartbeat is older than `VISAPP_STALE_AFTER_S`; a process that finds its lease gone stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

from visapp.service import records
from visapp.service.records import JobRecord, Lease
from visapp.service.store import JobStore

log = logging.getLogger(__name__)

Task = Literal["check", "train"]


class LeaseLost(Exception):
    """The reaper gave this work to another process (this one was taken for dead): stop."""


def worker_id() -> str:
    """This process and thread, as a lease names its holder: `host:pid:thread`."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def lease_file(task: Task, number: int) -> str:
    """The store object whose creation wins the lease of a check or an attempt."""
    return f"leases/{task}-{number:06d}"


class Holder:
    """One process's lease on check or attempt `number` of a job."""

    def __init__(self, store: JobStore, job_id: str, task: Task, number: int, heartbeat_s: float) -> None:
        self.store, self.job_id, self.task, self.number, self.heartbeat_s = store, job_id, task, number, heartbeat_s
        self.me = worker_id()
        self.last_beat = 0.0

    def ours(self, record: JobRecord) -> bool:
        """Whether the record's lease is this holder's."""
        lease = record.lease
        return lease is not None and (lease.task, lease.number, lease.worker) == (self.task, self.number, self.me)

    def claim(self, start: Callable[[JobRecord], JobRecord | None]) -> JobRecord | None:
        """Win the lease, then let `start` move the record (it returns None when the work is stale: the job moved
        on); the record, or None when another process has the work or it is stale."""
        if not self.store.create(self.job_id, lease_file(self.task, self.number), self.me.encode()):
            log.info("job %s %s %d: taken by another process", self.job_id, self.task, self.number)
            return None
        won: list[JobRecord] = []

        def change(record: JobRecord) -> JobRecord | None:
            if start(record) is None:
                return None
            record.lease = Lease(task=self.task, number=self.number, worker=self.me, heartbeat_at=records.now())
            won.append(record)
            return record

        record = records.update(self.store, self.job_id, change)
        self.last_beat = time.monotonic()
        if not won:
            log.info("job %s %s %d: no longer due; dropping it", self.job_id, self.task, self.number)
            return None
        return record

    def write(self, change: Callable[[JobRecord], None] | None = None) -> JobRecord:
        """Change the record while the lease is ours, renewing the heartbeat (raises LeaseLost when it is not)."""

        def apply(record: JobRecord) -> JobRecord:
            if not self.ours(record):
                raise LeaseLost(f"job {self.job_id}: {self.task} {self.number} was given to another process")
            if change is not None:
                change(record)
            assert record.lease is not None
            record.lease.heartbeat_at = records.now()
            return record

        self.last_beat = time.monotonic()
        return records.update(self.store, self.job_id, apply)

    def beat_if_due(self) -> None:
        """Renew the lease when a heartbeat interval has passed since the last write."""
        if time.monotonic() - self.last_beat >= self.heartbeat_s:
            self.write()

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """Renew the lease from a thread while the block works (downloading, checking, uploading): however long
        that takes, the work stays alive; LeaseLost after the block when it was lost meanwhile."""
        done = threading.Event()
        lost: list[LeaseLost] = []

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    self.write()
                except LeaseLost as exc:
                    lost.append(exc)
                    return
                except Exception:  # a store hiccup: the next beat may pass
                    log.exception("job %s: renewing the lease failed", self.job_id)

        thread = threading.Thread(target=beat, name="visapp-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
        if lost:
            raise lost[0]

    def finish(self, change: Callable[[JobRecord], JobRecord | None]) -> JobRecord | None:
        """Apply the work's last change and give the lease up, if it is still ours; the record, or None."""
        ended: list[JobRecord] = []

        def apply(record: JobRecord) -> JobRecord | None:
            if not self.ours(record) or change(record) is None:
                return None
            record.lease = None
            ended.append(record)
            return record

        records.update(self.store, self.job_id, apply)
        return ended[0] if ended else None
