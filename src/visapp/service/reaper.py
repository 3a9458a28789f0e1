"""The reaper: work whose process died is given to another, so that no job stays active for good.

It runs in every API process and every worker, every heartbeat interval, and finds:

- a check or an attempt whose lease went stale (no heartbeat for `VISAPP_STALE_AFTER_S`: its process was killed,
  its machine died). It wins `requeues/<task>-N` (exclusively: one reaper acts) and queues check N+1, or attempt
  N+1, which resumes from the last checkpoint stored whole. A check that died `MAX_CHECKS` times, or a training
  whose attempts died `MAX_ATTEMPTS` times, fails the job instead, saying so;
- a job waiting for a check or an attempt whose message is no longer in the queue (Huey hands a message to a
  consumer before it runs, so a consumer killed in between loses it): the message is queued again. A second
  message for the same work is harmless: its lease can be won once.

Each round also removes the scratch folders of this machine's processes that died (`visapp.service.scratch`).
"""

from __future__ import annotations

import logging
import threading
import time

from visapp.service import records, scratch
from visapp.service.checks import MAX_CHECKS
from visapp.service.leases import worker_id
from visapp.service.queue import CHECK_TASK, TRAIN_TASK, JobQueue
from visapp.service.records import Attempt, JobRecord, Progress, State
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # attempts of one training that lost their worker before the job fails


def _stale(record: JobRecord, settings: ServiceSettings) -> bool:
    beat = record.lease.heartbeat_at if record.lease else record.updated_at
    return time.time() - beat >= settings.stale_after_s


def reap(settings: ServiceSettings, store: JobStore, queue: JobQueue) -> list[str]:
    """One round: the ids of the jobs it acted on."""
    acted = []
    waiting: set[tuple[str, str, int]] | None = None
    for job_id in store.job_ids():
        try:
            record = records.load(store, job_id)
        except Exception:  # a record being deleted, or unreadable: not the reaper's to judge
            continue
        if record.state not in (State.uploaded, State.validating, State.queued, State.running):
            continue
        if not _stale(record, settings):
            continue
        if record.state == State.uploaded:
            done = _interrupted_upload(store, record)
        elif record.lease is not None or record.state == State.running:
            done = _take_over(settings, store, queue, record)
        else:
            if waiting is None:
                waiting = queue.waiting()
            done = _queue_again(store, queue, record, waiting)
        if done:
            acted.append(job_id)
    return acted


def _interrupted_upload(store: JobStore, record: JobRecord) -> bool:
    """The process receiving an upload died after making its record, before the archive was stored whole."""
    message = "the upload was interrupted before the archive was stored (the server restarted): upload it again"

    def failed(r: JobRecord) -> JobRecord | None:
        return r.move(State.failed, error=message) if r.state == State.uploaded else None

    after = records.update(store, record.id, failed)
    if after.state == State.failed:
        store.remove(record.id, record.upload.stored_as)
        log.warning("job %s: %s", record.id, message)
    return after.state == State.failed


def _take_over(settings: ServiceSettings, store: JobStore, queue: JobQueue, record: JobRecord) -> bool:
    """The process holding a check or an attempt stopped renewing its lease: the next check or attempt."""
    lease = record.lease
    task = lease.task if lease else ("check" if record.state == State.validating else "train")
    number = lease.number if lease else (record.checks if task == "check" else record.attempt)
    if not store.create(record.id, f"requeues/{task}-{number:06d}", worker_id().encode()):
        return False  # another reaper won
    who = "the process checking it" if task == "check" else "its worker"
    if task == "check":

        def recheck(r: JobRecord) -> JobRecord | None:
            if r.state != State.validating or r.checks != number:
                return None
            if number >= MAX_CHECKS:
                return r.move(State.failed, lease=None, progress=None, error=(
                    f"the check of this upload stopped {number} times ({who} died each time): the archive may be "
                    "too large for this server; upload a smaller one, or ask its operator"))  # fmt: skip
            r.checks, r.lease = number + 1, None
            r.progress = Progress(phase=f"waiting for a worker: {who} stopped; it is checked again")
            return r

        after = records.update(store, record.id, recheck)
        if after.state == State.validating and after.checks == number + 1:
            queue.check_upload(record.id, number + 1)
    else:

        def resume(r: JobRecord) -> JobRecord | None:
            current = r.current_attempt()
            if r.state != State.running or r.attempt != number or current is None:
                return None
            current.state, current.finished_at = State.failed, records.now()
            current.error = f"{who} stopped renewing its lease (it died, or its machine did)"
            lost = sum(1 for a in r.attempts if a.training == current.training and a.state == State.failed)
            if lost >= MAX_ATTEMPTS:
                return r.move(State.failed, lease=None, error=(
                    f"the training lost its worker {lost} times; the last checkpoint is kept: train again to "
                    "resume from nothing, or ask the service's operator"))  # fmt: skip
            r.attempts.append(Attempt(number=number + 1, training=current.training, state=State.queued,
                                      resumes=number, queued_at=records.now(), overrides=current.overrides,
                                      params=current.params))  # fmt: skip
            return r.move(State.queued, attempt=number + 1, lease=None,
                          note=f"attempt {number} lost its worker; attempt {number + 1} resumes from its checkpoint",
                          progress=Progress(phase="queued: resumes from the last checkpoint"))  # fmt: skip

        after = records.update(store, record.id, resume)
        if after.state == State.queued and after.attempt == number + 1:
            queue.train(record.id, number + 1)
        elif after.state == State.failed:
            from visapp.service.training import end_mlflow_run

            end_mlflow_run(after, "FAILED")
    log.warning("job %s: %s of %s %d stopped renewing its lease; %s", record.id, who, task, number,
                f"now {after.state}" if after.state == State.failed else "queued again")  # fmt: skip
    return True


def _queue_again(store: JobStore, queue: JobQueue, record: JobRecord, waiting: set[tuple[str, str, int]]) -> bool:
    """A job that waits for work no message in the queue carries: queue the message again."""
    if record.state == State.validating:
        wanted = (CHECK_TASK, record.id, record.checks)
    else:
        wanted = (TRAIN_TASK, record.id, record.attempt)
    if wanted in waiting:
        return False
    records.update(
        store, record.id, lambda r: r if (r.state, r.updated_at) == (record.state, record.updated_at) else None
    )  # fmt: skip  (a write stamps the time: the next round waits again)
    if wanted[0] == CHECK_TASK:
        queue.check_upload(record.id, record.checks)
    else:
        queue.train(record.id, record.attempt)
    log.warning("job %s: its %s message was lost (a consumer died holding it); queued again", record.id,
                "check" if wanted[0] == CHECK_TASK else "training")  # fmt: skip
    return True


class Reaper(threading.Thread):
    """Runs `reap` and sweeps this machine's scratch every heartbeat interval until stopped."""

    def __init__(self, settings: ServiceSettings, store: JobStore, queue: JobQueue) -> None:
        super().__init__(name="visapp-reaper", daemon=True)
        self.settings, self.store, self.queue = settings, store, queue
        self.stopped = threading.Event()

    def run(self) -> None:
        """Reap and sweep every heartbeat interval until `stop`; a failed round is logged, and the next one runs."""
        scratch.sweep(self.settings.work_dir)
        while not self.stopped.wait(self.settings.heartbeat_s):
            try:
                reap(self.settings, self.store, self.queue)
                scratch.sweep(self.settings.work_dir)
            except Exception:  # a store hiccup must not end the reaper
                log.exception("the reaper failed this round; it tries again")

    def stop(self) -> None:
        """End the loop (after the current round)."""
        self.stopped.set()
