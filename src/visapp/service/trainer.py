"""The training subprocess of a job: `python -m visapp.service.trainer SCRATCH`.

The worker prepares SCRATCH (the dataset, its metadata, the checkpoint folder of a resumed attempt, and
`trainer.json`: the training's params as composed at its request) and watches this process. It runs the library's
`train_model`, as the `train` stage does, then `run_evaluate`, as the `evaluate` stage does, with those params
(paths into SCRATCH); it never composes params itself.

It tells the worker what it does by appending JSON lines to `SCRATCH/progress.jsonl`: a phase when it starts and
when Ultralytics begins its first epoch, then after each epoch the epoch's numbers and the name of a snapshot:
a copy of the checkpoint folder as the epoch left it (`SCRATCH/snapshots/<epoch>`). The copy is taken inside the
epoch-end callback, while Ultralytics' loop waits on it, so it never holds a half-saved `last.pt`; nothing writes
to a snapshot after its rename, so the worker stores it at leisure. A training that fails writes why in
`SCRATCH/error.json`, in words without its server paths. Its stdout and stderr (Ultralytics' output among them)
go to the job's log.

SIGTERM ends this process at once; the last stored snapshot stays, and a later attempt resumes from it. It ends
the same way when its worker is gone (`VISAPP_WORKER_PID` is no longer its parent): it runs in a session of its
own, so a worker killed outright (SIGKILL, the OOM killer) or stopped would otherwise leave it training on,
beside the attempt the reaper queues next and into the same MLflow run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Required, TypedDict

from visapp import console
from visapp.progress import Progress

TRAINER_FILE = "trainer.json"
PROGRESS_FILE = "progress.jsonl"
ERROR_FILE = "error.json"
CHECKPOINTS = "checkpoint"
SNAPSHOTS = "snapshots"


class ProgressLine(TypedDict, total=False):
    """A line of progress.jsonl: what the trainer tells its worker."""

    phase: Required[str]
    epoch: int  # epochs done (a training's lines)
    epochs: int | None
    metrics: dict[str, float]  # the epoch's numbers, when one ended
    snapshot: str  # the copy of the checkpoint folder that epoch left (`snapshots/<epoch>`)


WORKER_PID = "VISAPP_WORKER_PID"
_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]*")  # an absolute POSIX path (not a URL's)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours in a library's message


def _worker() -> int:
    return int(os.environ.get(WORKER_PID) or os.getppid())


def orphaned(worker: int) -> bool:
    """Whether the worker that started this process is gone: its scratch folder is then another's to sweep, and
    nothing more may be written there (a write racing the sweep would leave a file behind)."""
    return os.getppid() != worker


def end_with_worker(interval: float = 1.0) -> None:
    """SIGTERM this process once its parent is no longer the worker that started it (a daemon thread)."""
    worker = _worker()

    def watch() -> None:
        while os.getppid() == worker:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # SIGTERM ends it unless something caught it
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="visapp-worker-watch", daemon=True).start()


def _without_views(folder: str, names: list[str]) -> list[str]:
    """What a snapshot leaves out: the training's dataset view (links into the dataset, rebuilt on every run)."""
    from visapp.dataset.views import VIEW_MARKER

    return [name for name in names if Path(folder, name, VIEW_MARKER).is_file()]


def snapshot(scratch: Path, epoch: int) -> str:
    """Copy the checkpoint folder, as this epoch left it, to `snapshots/<epoch>` (renamed into place when whole),
    without the dataset view, and copying links as links: following the view's folder links would copy the
    dataset's images into every snapshot."""
    name = f"{epoch:06d}"
    target = scratch / SNAPSHOTS / name
    partial = target.with_name(f"{name}.partial")
    for stale in (partial, target):  # from an attempt killed mid-copy, or an epoch trained again after a resume
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(scratch / CHECKPOINTS, partial, symlinks=True, ignore=_without_views)
    partial.rename(target)
    return name


def scrub(text: str, scratch: Path) -> str:
    """A message without this machine's paths (the scratch folder dropped, any other absolute path cut to its name)
    or terminal colours."""
    text = _ANSI.sub("", text)
    text = re.sub(re.escape(str(scratch)) + r"(/|(?![\w.@+-]))", lambda m: "" if m.group(1) else "the job's folder",
                  text)  # fmt: skip
    return _ABSOLUTE.sub(lambda match: Path(match.group(0)).name, text)


def _tell(scratch: Path, line: ProgressLine) -> None:
    with (scratch / PROGRESS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Train the job whose scratch folder `argv` names (see the module docstring); 0, or raise what failed."""
    from visapp.errors import VisError
    from visapp.service.params import with_paths
    from visapp.training.evaluate import run_evaluate
    from visapp.training.run import train_model

    scratch = Path((argv or sys.argv[1:])[0])
    worker = _worker()
    end_with_worker()
    _tell(scratch, {"phase": "starting the training: loading Ultralytics and building the model"})
    spec = json.loads((scratch / TRAINER_FILE).read_text(encoding="utf-8"))
    params = with_paths(spec["params"], scratch)

    trained: ProgressLine = {"phase": "evaluating on the held-out split and auditing the labels"}

    def report(update: Progress) -> None:
        line: ProgressLine = {"phase": "training", "epoch": update.done, "epochs": update.total}
        trained["epoch"], trained["epochs"] = update.done, update.total
        if update.metrics:  # an epoch ended (without metrics: the first epoch of this run begins)
            line["metrics"] = dict(update.metrics)
            line["snapshot"] = snapshot(scratch, update.done)
        _tell(scratch, line)

    environ = {"VISAPP_CHECKPOINT_DIR": str(scratch / CHECKPOINTS)}
    try:
        train_model(params, environ=environ, progress=report)
        # The epochs trained stay in the progress while the model is evaluated: the training is done, not undone.
        _tell(scratch, trained)
        run_evaluate(params)  # eval.json, audit.json and their figures, beside the weights: as the evaluate stage
    except Exception as exc:
        if orphaned(worker):  # killed with its worker: no one reads the error, and the folder is being swept
            raise
        told = str(exc) if isinstance(exc, VisError) else f"the training failed ({type(exc).__name__}: {exc})"
        (scratch / ERROR_FILE).write_text(json.dumps({"error": scrub(told, scratch)}), encoding="utf-8")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
