"""Running jobs: the checks of a large upload, trainings under a lease, and the reaper of dead workers.

Huey delivers a message at most once, so a worker killed mid-job would lose it. Hence a lease: the worker that
starts attempt N of a job creates `leases/N` in the store (exclusively: one winner) and renews the record's
heartbeat every `VISAPP_HEARTBEAT_S`. A reaper (in every worker and in the API) finds a running job whose
heartbeat is older than `VISAPP_STALE_AFTER_S`, wins `requeues/N` (exclusively), and queues attempt N+1, which
resumes from the last checkpoint the dead worker stored whole (see `store_snapshot`). A job with a live heartbeat
is never run twice: a second message for an attempt finds its lease taken, and a worker that finds its attempt
superseded (it was taken for dead) stops its training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.service import jobs
from visapp.service.jobs import State
from visapp.service.prepare import (
    METADATA,
    MODEL,
    VALIDATED,
    UploadRefused,
    check_dataset,
    convert_dataset,
    discard,
    job_params,
    summaries,
    unpack,
)
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore
from visapp.service.trainer import CHECKPOINTS, PROGRESS_FILE, SNAPSHOTS, TRAINER_FILE, WORKER_PID

log = logging.getLogger(__name__)

LOG_FILE = "train.log"
CHECKPOINT_RECORD = "checkpoint.json"  # names the stored checkpoint that is whole
STOP_GRACE_S = 30  # after SIGTERM, before SIGKILL
MODEL_FILES = ("weights/best.pt", "metrics.json", "results.csv", "mlflow_run.json")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


def upload_name(record: dict[str, Any]) -> str:
    return record["upload"]["stored_as"]


# ---------------------------------------------------------------- the checks of an upload


def store_checked(store: JobStore, job_id: str, scratch: Path, prepared: Any) -> dict[str, Any]:
    """Send the report, manifest, metadata and figures of a checked upload to the store; the record's fields."""
    store.put(job_id, VALIDATED, scratch / VALIDATED)
    if prepared.metadata is not None:
        store.put(job_id, METADATA, scratch / METADATA)
    return summaries(prepared)


def check_upload(settings: ServiceSettings, store: JobStore, job_id: str) -> dict[str, Any]:
    """validating -> ready | rejected | failed, for an upload stored in the job (run by a worker)."""
    record = jobs.load(store, job_id)
    scratch = settings.work_dir / job_id / "check"
    discard(scratch)
    try:
        scratch.mkdir(parents=True)
        archive = scratch / upload_name(record)
        store.get(job_id, upload_name(record), archive)
        unpack(archive, scratch / "raw")
        prepared = check_dataset(scratch, record.get("classes_given"))
        fields = store_checked(store, job_id, scratch, prepared)
        state = State.rejected if prepared.rejected else State.ready
        return jobs.update(store, job_id, lambda r: jobs.move(r, state, **fields))
    except UploadRefused as exc:
        message = f"{exc.code}: {exc.message}"
        return jobs.update(store, job_id, lambda r: jobs.move(r, State.rejected, error=message))
    except Exception as exc:
        log.exception("job %s: checking the upload failed", job_id)
        text = f"{type(exc).__name__}: {exc}"
        return jobs.update(store, job_id, lambda r: jobs.move(r, State.failed, error=text))
    finally:
        discard(scratch)


# ---------------------------------------------------------------- a training under a lease


class LeaseLost(Exception):
    """The reaper gave this attempt to another worker: stop."""


class Training:
    """One attempt of one job's training on this worker."""

    def __init__(self, settings: ServiceSettings, store: JobStore, job_id: str, attempt: int) -> None:
        self.settings, self.store, self.job_id, self.attempt = settings, store, job_id, attempt
        self.me = worker_id()
        self.scratch = settings.work_dir / job_id / f"attempt-{attempt}"
        self.last_beat = 0.0
        self.progress_at = 0  # bytes of progress.jsonl read so far
        self.epoch = 0

    # -------------------------------------------------------- lease

    def claim(self) -> bool:
        """Take the lease of this attempt; False when another worker has it or the message is stale."""
        if not self.store.create(self.job_id, f"leases/{self.attempt:06d}", self.me.encode()):
            log.info("job %s attempt %d: taken by another worker; dropping the message", self.job_id, self.attempt)
            return False
        won: list[bool] = []

        def start(record: dict[str, Any]) -> dict[str, Any] | None:
            if record["attempt"] != self.attempt or record["state"] != State.queued:
                return None  # a stale message: the job moved on (cancelled, re-queued, finished)
            won.append(True)
            lease = {"worker": self.me, "heartbeat_at": jobs.now(), "attempt": self.attempt}
            return jobs.move(record, State.running, lease=lease, error=None)

        jobs.update(self.store, self.job_id, start)
        if not won:
            log.info("job %s attempt %d: no longer queued; dropping the message", self.job_id, self.attempt)
        return bool(won)

    def write(self, **fields: Any) -> dict[str, Any]:
        """Update the record while the lease is ours (raises LeaseLost when it is not)."""

        def change(record: dict[str, Any]) -> dict[str, Any]:
            if record["attempt"] != self.attempt or record["state"] != State.running:
                raise LeaseLost(f"job {self.job_id}: attempt {self.attempt} was superseded")
            record.update(fields)
            record["lease"] = {**(record.get("lease") or {}), "heartbeat_at": jobs.now()}
            return record

        self.last_beat = time.monotonic()
        return jobs.update(self.store, self.job_id, change)

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """Renew the lease from a thread while the block works without the supervisor's loop (downloading and
        converting the dataset, uploading the results): however long that takes, the attempt stays alive."""
        done = threading.Event()
        lost: list[LeaseLost] = []

        def beat() -> None:
            while not done.wait(self.settings.heartbeat_s):
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

    def finish(self, state: State, **fields: Any) -> None:
        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if record["attempt"] != self.attempt or record["state"] != State.running:
                return None
            return jobs.move(record, state, lease=None, **fields)

        jobs.update(self.store, self.job_id, change)

    # -------------------------------------------------------- the work

    def prepare(self, record: dict[str, Any]) -> None:
        """The job's dataset, converted, its metadata, the checkpoint so far and the trainer's spec, in scratch."""
        discard(self.scratch)
        self.scratch.mkdir(parents=True)
        archive = self.scratch / upload_name(record)
        self.store.get(self.job_id, upload_name(record), archive)
        unpack(archive, self.scratch / "raw")
        archive.unlink()
        self.store.get(self.job_id, VALIDATED, self.scratch / VALIDATED)
        self.store.get(self.job_id, METADATA, self.scratch / METADATA)
        overrides = record.get("overrides") or {}
        convert_dataset(self.scratch, job_params(record["classes"], overrides).data)
        stored = (self.store.read_json(self.job_id, CHECKPOINT_RECORD) or {}).get("snapshot")
        if stored and self.store.get(self.job_id, f"{CHECKPOINTS}/{stored}", self.scratch / CHECKPOINTS):
            log.info("job %s attempt %d: resuming after epoch %d", self.job_id, self.attempt, int(stored))
        spec = {"job_id": self.job_id, "classes": record["classes"], "overrides": overrides}
        (self.scratch / TRAINER_FILE).write_text(json.dumps(spec), encoding="utf-8")

    def read_progress(self) -> dict[str, Any] | None:
        """The newest epoch line the trainer appended since the last call, if any."""
        path = self.scratch / PROGRESS_FILE
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            handle.seek(self.progress_at)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.progress_at += len(complete)
        lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return lines[-1] if lines else None

    def mlflow_run_id(self) -> str | None:
        """The training's MLflow run: from the model's record once written, else from the checkpoint's state."""
        written = self.scratch / MODEL / "mlflow_run.json"
        if written.is_file():
            return json.loads(written.read_text(encoding="utf-8")).get("run_id")
        for state_file in (self.scratch / CHECKPOINTS).glob("*/state.json"):
            try:
                return json.loads(state_file.read_text(encoding="utf-8")).get("mlflow_run_id")
            except (OSError, ValueError):
                return None
        return None

    def store_snapshot(self, name: str) -> None:
        """Store the trainer's snapshot `name` as the job's checkpoint: its folder first, then the record naming
        it (one atomic write), then older ones go. A worker killed at any point leaves a whole checkpoint named."""
        self.store.put(self.job_id, f"{CHECKPOINTS}/{name}", self.scratch / SNAPSHOTS / name)
        self.store.write_json(self.job_id, {"snapshot": name}, CHECKPOINT_RECORD)
        for older in self.store.names(self.job_id, CHECKPOINTS):
            if older != name:
                self.store.remove(self.job_id, f"{CHECKPOINTS}/{older}")
        for folder in (self.scratch / SNAPSHOTS).iterdir():
            if folder.name <= name and not folder.name.endswith(".partial"):
                shutil.rmtree(folder, ignore_errors=True)

    def supervise(self, child: subprocess.Popen[bytes]) -> str:
        """Watch the trainer until it ends: progress, heartbeat, cancel. Returns how it ended."""
        cancelled = False
        while True:
            try:
                child.wait(timeout=1.0)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
            update = self.read_progress()
            if update is not None:
                self.epoch = int(update["epoch"])
                self.store_snapshot(update["snapshot"])
                self.write(progress=update, mlflow_run_id=self.mlflow_run_id())
                log.info("job %s: epoch %d/%s", self.job_id, self.epoch, update.get("epochs"))
            if ended:
                return "cancelled" if cancelled else ("done" if child.returncode == 0 else "failed")
            if time.monotonic() - self.last_beat >= self.settings.heartbeat_s:
                try:
                    self.write()
                except LeaseLost:
                    stop(child)
                    raise
            if not cancelled and jobs.cancel_requested(self.store, self.job_id):
                log.info("job %s: cancel requested; stopping the training", self.job_id)
                cancelled = True
                stop(child)

    def run(self) -> None:
        record = jobs.load(self.store, self.job_id)
        with self.beating():
            self.prepare(record)
        env = {**os.environ, "VISAPP_JOB_ID": self.job_id, "YOLO_OFFLINE": "true", WORKER_PID: str(os.getpid())}
        with (self.scratch / LOG_FILE).open("ab") as log_file:
            child = subprocess.Popen(
                [sys.executable, "-m", "visapp.service.trainer", str(self.scratch)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a signal to the worker's group does not reach the trainer first
            )
            try:
                how = self.supervise(child)
            except BaseException:
                stop(child)
                raise
        with self.beating():
            self.store.put(self.job_id, f"{MODEL}/{LOG_FILE}", self.scratch / LOG_FILE)
            if how == "done":
                for name in MODEL_FILES:
                    if (self.scratch / MODEL / name).is_file():
                        self.store.put(self.job_id, f"{MODEL}/{name}", self.scratch / MODEL / name)
        if how == "done":
            metrics = json.loads((self.scratch / MODEL / "metrics.json").read_text(encoding="utf-8"))
            self.finish(State.succeeded, metrics=metrics, mlflow_run_id=self.mlflow_run_id())
        elif how == "cancelled":
            self.finish(State.cancelled, error=None)
        else:
            self.finish(State.failed, error=f"the training exited with status {child.returncode}: {tail(self.scratch)}")


def stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after the grace period."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def tail(scratch: Path, lines: int = 5) -> str:
    try:
        text = (scratch / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def train_job(settings: ServiceSettings, store: JobStore, job_id: str, attempt: int) -> None:
    """The queue's training task: one attempt, if this worker wins its lease."""
    training = Training(settings, store, job_id, attempt)
    if not training.claim():
        return
    try:
        training.run()
    except LeaseLost as exc:
        log.warning("%s; another worker runs it now", exc)
    except (VisError, UploadRefused) as exc:
        training.finish(State.failed, error=str(exc))
    except Exception as exc:
        log.exception("job %s: the worker failed", job_id)
        training.finish(State.failed, error=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(training.scratch, ignore_errors=True)


# ---------------------------------------------------------------- the reaper


def reap(settings: ServiceSettings, store: JobStore, enqueue: Any) -> list[str]:
    """Re-queue each running job whose lease went stale; returns their ids. `enqueue(job_id, attempt)`."""
    requeued = []
    for job_id in store.job_ids():
        record = store.read_json(job_id)
        if not record or record.get("state") != State.running:
            continue
        beat = (record.get("lease") or {}).get("heartbeat_at") or 0
        if time.time() - beat < settings.stale_after_s:
            continue
        attempt = int(record["attempt"])
        if not store.create(job_id, f"requeues/{attempt:06d}", worker_id().encode()):
            continue  # another reaper won
        worker = (record.get("lease") or {}).get("worker")

        def requeue(r: dict[str, Any], attempt: int = attempt, worker: Any = worker) -> dict[str, Any] | None:
            if r["attempt"] != attempt or r["state"] != State.running:
                return None
            note = f"attempt {attempt} lost its worker ({worker}); resumed from its checkpoint"
            return jobs.move(r, State.queued, attempt=attempt + 1, lease=None, note=note)

        jobs.update(store, job_id, requeue)
        enqueue(job_id, attempt + 1)
        log.warning(
            "job %s: the worker of attempt %d stopped renewing its lease; queued attempt %d",
            job_id,
            attempt,
            attempt + 1,
        )
        requeued.append(job_id)
    return requeued


class Reaper(threading.Thread):
    """Runs `reap` every heartbeat interval until stopped."""

    def __init__(self, settings: ServiceSettings, store: JobStore, enqueue: Any) -> None:
        super().__init__(name="visapp-reaper", daemon=True)
        self.settings, self.store, self.enqueue = settings, store, enqueue
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_s):
            try:
                reap(self.settings, self.store, self.enqueue)
            except Exception:  # a store hiccup must not end the reaper
                log.exception("the reaper failed this round; it tries again")

    def stop(self) -> None:
        self.stopped.set()
