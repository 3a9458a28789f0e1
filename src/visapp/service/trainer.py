"""The training subprocess of a job: `python -m visapp.service.trainer SCRATCH`.

The worker prepares SCRATCH (the dataset, its metadata, the checkpoint folder from the store, and
`trainer.json`: classes, train overrides) and watches this process. It runs the library's `train_model`, as the
`train` stage does, and appends one JSON line per epoch to `SCRATCH/progress.jsonl` (its stdout and stderr,
Ultralytics' output among them, go to the job's log). SIGTERM ends it at once; the checkpoint of the last
finished epoch stays, and a later attempt resumes from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from visapp import console
from visapp.progress import Progress

TRAINER_FILE = "trainer.json"
PROGRESS_FILE = "progress.jsonl"
CHECKPOINTS = "checkpoint"


def main(argv: list[str] | None = None) -> int:
    from visapp.service.prepare import job_params
    from visapp.training.run import train_model

    scratch = Path((argv or sys.argv[1:])[0])
    spec = json.loads((scratch / TRAINER_FILE).read_text(encoding="utf-8"))
    params = job_params(spec["classes"], spec.get("overrides"), scratch)

    def report(update: Progress) -> None:
        line = {"epoch": update.done, "epochs": update.total, "metrics": dict(update.metrics)}
        with (scratch / PROGRESS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    environ = {"VISAPP_CHECKPOINT_DIR": str(scratch / CHECKPOINTS)}
    train_model(params, environ=environ, progress=report)
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
