"""The job queue: Huey, with SQLite in one process (the default) or Redis shared by many machines.

`visapp serve` runs the API and one consumer in its process; `visapp worker` runs a consumer alone, so N
machines pointed at one Redis (`VISAPP_QUEUE_URL=redis://...`) and one store share the work. A message carries
only a job id and the number of the check or attempt: everything else is in the job store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.integrations.huey import consumer as huey_consumer
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore

log = logging.getLogger(__name__)

CHECK_TASK, TRAIN_TASK = "visapp.check_upload", "visapp.train"


def make_huey(settings: ServiceSettings) -> Any:
    """Huey on the configured queue; the tasks' return values are not kept (the job store holds every outcome)."""
    from huey import RedisHuey, SqliteHuey

    url = settings.queue_url
    if url is None:
        settings.local_queue.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("visapp", filename=str(settings.local_queue), results=False)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey("visapp", url=url, results=False)
    if url.startswith("sqlite:///"):
        # A URL's path is absolute, as for file:///srv/queue.db: sqlite:///srv/queue.db is /srv/queue.db.
        path = Path("/" + url.removeprefix("sqlite:///").lstrip("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("visapp", filename=str(path), results=False)
    raise VisError(f"VISAPP_QUEUE_URL {url!r}: use redis://host:port/db, or sqlite:///path, or leave it unset")


def health(huey: Any) -> str:
    """A verdict: the queue answers (raises when it does not). `/health` and `visapp doctor` ask it."""
    return f"{int(huey.pending_count())} message(s) waiting ({type(huey).__name__})"


class JobQueue:
    """Huey and the service's two tasks, registered under fixed names (every process must know them)."""

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        from visapp.service import checks, training

        self.settings, self.store = settings, store
        self.huey = make_huey(settings)
        self._check = self.huey.task(name=CHECK_TASK)(
            lambda job_id, number: checks.run_check(settings, store, job_id, number)
        )
        self._train = self.huey.task(name=TRAIN_TASK)(
            lambda job_id, attempt: training.train_job(settings, store, job_id, attempt)
        )

    def check_upload(self, job_id: str, number: int) -> None:
        """Queue the check of a job's upload (`number`: the check's)."""
        self._check(job_id, number)

    def train(self, job_id: str, attempt: int) -> None:
        """Queue attempt `attempt` of a job's training."""
        self._train(job_id, attempt)

    def waiting(self) -> set[tuple[str, str, int]]:
        """(task name, job id, number) of every message in the queue."""
        found = set()
        for task in self.huey.pending():
            if task.name in (CHECK_TASK, TRAIN_TASK) and len(task.args) == 2:
                found.add((task.name, str(task.args[0]), int(task.args[1])))
        return found

    def health(self) -> str:
        """A verdict: the queue answers (raises when it does not)."""
        return health(self.huey)

    def consumer(self, workers: int = 1, in_thread: bool = False) -> Any:
        """A Huey consumer; `in_thread`: for the API's process (no signal handlers: they need the main thread)."""
        return huey_consumer(self.huey, workers, in_thread)
