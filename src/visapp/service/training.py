"""One attempt of a job's training on a worker: under a lease, in a locked scratch folder, in a subprocess.

The worker that wins attempt N's lease prepares the dataset (the stored archive unpacked, the job's report and
metadata, `run_convert` with the training's params), restores the stored checkpoint when the attempt resumes
an earlier one, and starts `python -m visapp.service.trainer`. While it trains, the worker stores each epoch's
snapshot as the job's checkpoint (its folder first, then `checkpoint.json` naming it, then older ones go: a worker
killed at any point leaves a whole checkpoint named), reports the epoch in the record, renews its lease and
watches for a cancel. At the end it stores the attempt's model under `models/<attempt>/` (a cancelled or failed
training: its best weights so far, when an epoch ended) and ends the MLflow run as the training ended.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from visapp.errors import VisError
from visapp.service import records, scratch
from visapp.service.checks import UploadRefused, unpack
from visapp.service.leases import Holder, LeaseLost
from visapp.service.lineage import code_version
from visapp.service.params import METADATA, MODEL, RAW, VALIDATED, with_paths
from visapp.service.records import EpochMetrics, JobRecord, Progress, State
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore
from visapp.service.trainer import (
    CHECKPOINTS,
    ERROR_FILE,
    PROGRESS_FILE,
    SNAPSHOTS,
    TRAINER_FILE,
    WORKER_PID,
    ProgressLine,
)
from visapp.training.results import Metrics

log = logging.getLogger(__name__)

LOG_FILE = "train.log"
CHECKPOINT_RECORD = "checkpoint.json"  # names the stored checkpoint that is whole, and its training
STOP_GRACE_S = 30  # after SIGTERM, before SIGKILL
MODEL_FILES = ("weights/best.pt", "metrics.json", "results.csv", "mlflow_run.json", "eval.json", "audit.json",
               "audit.png")  # fmt: skip
MODEL_FOLDERS = ("eval_plots",)


def model_folder(attempt: int) -> str:
    """Where an attempt's model lies in the job's folder."""
    return f"models/{attempt:06d}"


class Training:
    """One attempt of one job's training on this worker."""

    def __init__(self, settings: ServiceSettings, store: JobStore, job_id: str, attempt: int) -> None:
        self.settings, self.store, self.job_id, self.attempt = settings, store, job_id, attempt
        self.holder = Holder(store, job_id, "train", attempt, settings.heartbeat_s)
        self.folder = Path()
        self.progress_at = 0  # bytes of progress.jsonl read so far
        self.best_snapshot: str | None = None  # the newest snapshot stored
        self.last_progress: Progress | None = None  # the trainer's newest news

    def claim(self) -> JobRecord | None:
        """Win the attempt's lease and mark it running; None when another process has it, or the job moved on."""

        def start(record: JobRecord) -> JobRecord | None:
            if record.attempt != self.attempt or record.state != State.queued:
                return None  # a stale message: the job moved on (cancelled, re-queued, finished)
            current = record.current_attempt()
            if current is not None:
                current.state, current.started_at = State.running, records.now()
                current.worker_code = code_version()
            return record.move(State.running, error=None, progress=Progress(phase="preparing the dataset"))

        return self.holder.claim(start)

    # -------------------------------------------------------- the work

    def prepare(self, record: JobRecord) -> None:
        """The dataset (unpacked and converted), its report and metadata, the checkpoint of the attempt it resumes,
        and the trainer's params, in the scratch folder."""
        current = record.current_attempt()
        if current is None:
            raise VisError(f"job {self.job_id} has no attempt {self.attempt}")
        folder = self.folder
        archive = folder / record.upload.stored_as
        self.store.get(self.job_id, record.upload.stored_as, archive)
        unpack(archive, folder / RAW, "the upload")
        archive.unlink()
        self.store.get(self.job_id, VALIDATED, folder / VALIDATED)
        self.store.get(self.job_id, METADATA, folder / METADATA)
        from visapp.dataset.convert import run_convert

        run_convert(with_paths(current.params, folder))
        stored = self.store.read_json(self.job_id, CHECKPOINT_RECORD) or {}
        resumable = current.resumes is not None and stored.get("training") == current.training
        if resumable and self.store.get(self.job_id, f"{CHECKPOINTS}/{stored['snapshot']}", folder / CHECKPOINTS):
            log.info("job %s attempt %d: resuming after epoch %d", self.job_id, self.attempt, int(stored["snapshot"]))
        else:
            log.info("job %s attempt %d: a new training (training %d)", self.job_id, self.attempt, current.training)
        (folder / TRAINER_FILE).write_text(json.dumps({"params": current.params}), encoding="utf-8")

    def read_progress(self) -> list[ProgressLine]:
        """The lines the trainer appended since the last call."""
        path = self.folder / PROGRESS_FILE
        if not path.is_file():
            return []
        with path.open("rb") as handle:
            handle.seek(self.progress_at)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.progress_at += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def mlflow_run_id(self) -> str | None:
        """The training's MLflow run: from the model's record once written, else from the checkpoint's state."""
        written = self.folder / MODEL / "mlflow_run.json"
        if written.is_file():
            run_id: str | None = json.loads(written.read_text(encoding="utf-8")).get("run_id")
            return run_id
        for state_file in (self.folder / CHECKPOINTS).glob("*/state.json"):
            try:
                run_id = json.loads(state_file.read_text(encoding="utf-8")).get("mlflow_run_id")
            except (OSError, ValueError):
                return None
            return run_id
        return None

    def store_snapshot(self, name: str, training: int) -> None:
        """Store the trainer's snapshot `name` as the job's checkpoint: its folder, then the record naming it (one
        atomic write), then older ones go."""
        self.store.put(self.job_id, f"{CHECKPOINTS}/{name}", self.folder / SNAPSHOTS / name)
        self.store.write_json(self.job_id, {"snapshot": name, "training": training}, CHECKPOINT_RECORD)
        for older in self.store.names(self.job_id, CHECKPOINTS):
            if older != name:
                self.store.remove(self.job_id, f"{CHECKPOINTS}/{older}")
        for snapshot in (self.folder / SNAPSHOTS).iterdir():
            if snapshot.name < name and not snapshot.name.endswith(".partial"):
                shutil.rmtree(snapshot, ignore_errors=True)
        self.best_snapshot = name

    def tell(self, progress: Progress, epoch: int | None, run_id: str | None,
             ended: list[EpochMetrics] | None = None) -> None:  # fmt: skip
        """Put the trainer's news in the record (renewing the lease): its phase or epoch, the epochs `ended` with
        their numbers, the MLflow run."""

        self.last_progress = progress

        def change(record: JobRecord) -> None:
            record.progress, record.mlflow_run_id = progress, run_id or record.mlflow_run_id
            current = record.current_attempt()
            if current is not None:
                current.mlflow_run_id = record.mlflow_run_id
                current.epochs_done = epoch if epoch is not None else current.epochs_done
                for point in ended or []:
                    records.add_epoch(current.epoch_metrics, point)

        self.holder.write(change)

    def supervise(self, child: subprocess.Popen[bytes], training: int) -> str:
        """Watch the trainer until it ends: progress, heartbeat, cancel. Returns how it ended."""
        cancelled = False
        while True:
            try:
                child.wait(timeout=1.0)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
            lines = self.read_progress()
            for line in lines:
                if line.get("snapshot"):
                    self.store_snapshot(line["snapshot"], training)
            if lines:
                last = lines[-1]
                progress = Progress(phase=last["phase"], epoch=last.get("epoch"), epochs=last.get("epochs"),
                                    metrics=last.get("metrics") or {})  # fmt: skip
                epoch = max((int(line["epoch"]) for line in lines if line.get("snapshot")), default=None)
                points = [EpochMetrics(epoch=int(line["epoch"]), metrics=line["metrics"]) for line in lines
                          if line.get("snapshot") and line.get("metrics")]  # fmt: skip
                try:
                    self.tell(progress, epoch, self.mlflow_run_id(), points)
                except LeaseLost:
                    stop(child)
                    raise
                if epoch is not None:
                    log.info("job %s: epoch %d/%s", self.job_id, epoch, progress.epochs)
            if ended:
                return "cancelled" if cancelled else ("done" if child.returncode == 0 else "failed")
            try:
                self.holder.beat_if_due()
            except LeaseLost:
                stop(child)
                raise
            if not cancelled and records.cancel_requested(self.store, self.job_id):
                log.info("job %s: cancel requested; stopping the training", self.job_id)
                cancelled = True
                stop(child)

    def store_model(self, how: str) -> bool:
        """Store this attempt's model: the training's outputs when it finished, else the best weights of the newest
        snapshot (when an epoch ended). Whether a model was stored."""
        target = model_folder(self.attempt)
        self.store.put(self.job_id, f"{target}/{LOG_FILE}", self.folder / LOG_FILE)
        if how == "done":
            for name in (*MODEL_FILES, *MODEL_FOLDERS):
                if (self.folder / MODEL / name).exists():
                    self.store.put(self.job_id, f"{target}/{name}", self.folder / MODEL / name)
            return True
        if self.best_snapshot is not None:
            found = sorted((self.folder / SNAPSHOTS / self.best_snapshot).glob("*/run/weights/best.pt"))
            if found:
                self.store.put(self.job_id, f"{target}/weights/best.pt", found[0])
                return True
        return False

    def run(self, record: JobRecord) -> None:
        """Prepare the scratch, run the trainer as a subprocess and supervise it, store the model, end the attempt."""
        current = record.current_attempt()
        assert current is not None
        with scratch.scratch(self.settings.work_dir, self.job_id, f"attempt-{self.attempt}") as folder:
            self.folder = folder
            with self.holder.beating():
                self.prepare(record)
            self.holder.write(lambda r: setattr(r, "progress", Progress(phase="starting the training")))
            env = {**os.environ, "VISAPP_JOB_ID": self.job_id, "YOLO_OFFLINE": "true", WORKER_PID: str(os.getpid())}
            with (folder / LOG_FILE).open("ab") as log_file:
                child = subprocess.Popen(
                    [sys.executable, "-m", "visapp.service.trainer", str(folder)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # a signal to the worker's group does not reach the trainer first
                )
                try:
                    how = self.supervise(child, current.training)
                except BaseException:
                    stop(child)
                    raise
            self.holder.write(lambda r: setattr(r, "progress", Progress(phase="storing the model")))
            with self.holder.beating():
                stored = self.store_model(how)
            outcome = self.outcome(how, child.returncode)
        self.end(stored, *outcome)  # once the scratch is gone

    def outcome(self, how: str, returncode: int | None) -> tuple[State, Metrics | None, str | None, str | None]:
        """How the training ended, read from its scratch: the state, the metrics, the error, the MLflow run."""
        metrics: Metrics | None = None
        if how == "done":
            metrics = json.loads((self.folder / MODEL / "metrics.json").read_text(encoding="utf-8"))
        state = {"done": State.succeeded, "cancelled": State.cancelled}.get(how, State.failed)
        error = None
        if state == State.failed:
            told = self.folder / ERROR_FILE
            error = (
                json.loads(told.read_text(encoding="utf-8"))["error"]
                if told.is_file()
                else f"the training stopped (exit status {returncode}); the job's log has the details"
            )
        return state, metrics, error, self.mlflow_run_id()

    def end(self, stored: bool, state: State, metrics: Metrics | None, error: str | None, run_id: str | None) -> None:
        """Write how the attempt ended (state, metrics, error, MLflow run) and give the lease up; a failed or cancelled
        training's MLflow run is ended too."""

        def change(record: JobRecord) -> JobRecord:
            current = record.current_attempt()
            if current is not None:
                current.state, current.finished_at, current.model = state, records.now(), stored
                current.metrics, current.error = metrics, error
                current.mlflow_run_id = run_id or current.mlflow_run_id
            return record.move(state, metrics=metrics, error=error, progress=self.last_progress,
                               mlflow_run_id=run_id or record.mlflow_run_id)  # fmt: skip

        ended = self.holder.finish(change)
        if ended is not None and state != State.succeeded:
            end_mlflow_run(ended, "KILLED" if state == State.cancelled else "FAILED")
        if ended is not None:
            end_abandoned_runs(ended)


def end_abandoned_runs(record: JobRecord) -> None:
    """End as KILLED the MLflow runs that earlier attempts of the current training left RUNNING: an attempt whose
    worker died before its first epoch is not resumed but started over, in a run of its own."""
    current = record.current_attempt()
    if current is None:
        return
    earlier = {a.mlflow_run_id for a in record.attempts if a.training == current.training and a.mlflow_run_id}
    earlier.discard(current.mlflow_run_id)
    if not earlier:
        return
    from visapp.config import to_params
    from visapp.training import tracking

    try:
        uri = tracking.resolve_uri(to_params(current.params).tracking)
        for run_id in sorted(earlier):
            if tracking.end_abandoned(uri, run_id):
                log.info("job %s: MLflow run %s of an attempt that started over is ended as KILLED", record.id, run_id)
    except Exception as exc:  # the job's state is what counts; the runs' status follows when it can
        log.warning("job %s: could not end the MLflow runs of earlier attempts (%s)", record.id, exc)


def end_mlflow_run(record: JobRecord, status: str) -> None:
    """End the MLflow run of a training that will not be resumed (cancelled, failed): KILLED or FAILED."""
    current = record.current_attempt()
    run_id = (current.mlflow_run_id if current else None) or record.mlflow_run_id
    if not run_id or current is None:
        return
    from visapp.config import to_params
    from visapp.training import tracking

    try:
        uri = tracking.resolve_uri(to_params(current.params).tracking)
        tracking.Run(uri, run_id, "").end(status)
    except Exception as exc:  # the job's state is what counts; the run's status follows when it can
        log.warning("job %s: could not mark MLflow run %s %s (%s)", record.id, run_id, status, exc)


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


def train_job(settings: ServiceSettings, store: JobStore, job_id: str, attempt: int) -> None:
    """The queue's training task: one attempt, if this worker wins its lease."""
    training = Training(settings, store, job_id, attempt)
    record = training.claim()
    if record is None:
        return
    try:
        training.run(record)
    except LeaseLost as exc:
        log.warning("%s; another worker runs it now", exc)
    except Exception as exc:
        if isinstance(exc, VisError | UploadRefused):
            message = str(exc)
        else:
            log.exception("job %s: the worker failed", job_id)
            message = f"an internal error ({type(exc).__name__}) in the worker; the worker's log has it"

        def failed(record: JobRecord) -> JobRecord:
            current = record.current_attempt()
            if current is not None:
                current.state, current.finished_at, current.error = State.failed, records.now(), message
            return record.move(State.failed, error=message)

        ended = training.holder.finish(failed)
        if ended is not None:
            end_mlflow_run(ended, "FAILED")
