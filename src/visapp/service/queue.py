"""The job queue: Huey, with SQLite in one process (the default) or Redis shared by many machines.

`visapp serve` runs the API and one consumer in its process; `visapp worker` runs a consumer alone, so N
machines pointed at one Redis (`VISAPP_QUEUE_URL=redis://...`) and one store share the work. Tasks carry only
a job id (and the attempt): everything else is in the job store.
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


def make_huey(settings: ServiceSettings) -> Any:
    from huey import RedisHuey, SqliteHuey

    url = settings.queue_url
    if url is None:
        settings.local_queue.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("visapp", filename=str(settings.local_queue))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey("visapp", url=url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("visapp", filename=str(path))
    raise VisError(f"VISAPP_QUEUE_URL {url!r}: use redis://host:port/db, or sqlite:///path, or leave it unset")


def health(huey: Any) -> str:
    """A verdict: the queue answers (raises when it does not). `/health` and `visapp doctor` ask it."""
    return f"{int(huey.pending_count())} message(s) waiting ({type(huey).__name__})"


class JobQueue:
    """Huey and the service's two tasks, registered under fixed names (every process must know them)."""

    def __init__(self, settings: ServiceSettings, store: JobStore) -> None:
        from visapp.service import worker

        self.settings, self.store = settings, store
        self.huey = make_huey(settings)
        self._check = self.huey.task(name="visapp.check_upload")(
            lambda job_id: worker.check_upload(settings, store, job_id)
        )
        self._train = self.huey.task(name="visapp.train")(
            lambda job_id, attempt: worker.train_job(settings, store, job_id, attempt)
        )

    def check_upload(self, job_id: str) -> None:
        self._check(job_id)

    def train(self, job_id: str, attempt: int) -> None:
        self._train(job_id, attempt)

    def pending(self) -> int:
        return int(self.huey.pending_count())

    def health(self) -> str:
        """A verdict: the queue answers (raises when it does not)."""
        return health(self.huey)

    def consumer(self, workers: int = 1, in_thread: bool = False) -> Any:
        """A Huey consumer; `in_thread`: for the API's process (no signal handlers: they need the main thread)."""
        return huey_consumer(self.huey, workers, in_thread)
