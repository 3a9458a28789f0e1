"""The service's settings, all from the environment (a container or an EC2 instance sets them; no file).

| variable | default | meaning |
|---|---|---|
| `VISAPP_STORE_URL` | `file://<cwd>/.visapp/jobs` | the job store: a folder, or `s3://bucket/prefix` |
| `VISAPP_QUEUE_URL` | SQLite at `<cwd>/.visapp/queue.db` | `redis://host:6379/0` shares the queue between machines |
| `VISAPP_WORK_DIR` | `<cwd>/.visapp/work` | a worker's local scratch (datasets, checkpoints while training) |
| `VISAPP_API_TOKEN` | none | bearer token(s), comma-separated; without one the API refuses to start |
| `VISAPP_MAX_UPLOAD` | `2G` | largest accepted upload (bytes, or with K/M/G) |
| `VISAPP_MAX_CONCURRENT_UPLOADS` | `4` | uploads received at once (more get 429) |
| `VISAPP_MAX_QUEUED_JOBS` | `20` | queued or running trainings per token (more get 429) |
| `VISAPP_HEARTBEAT_S` | `10` | how often a worker renews its lease on a running job |
| `VISAPP_STALE_AFTER_S` | `60` | a lease not renewed for this long is taken over by the reaper |
| `VISAPP_INLINE_LIMIT` | `64M` | uploads up to this size are checked in the request; larger ones by a worker |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from visapp.errors import VisError
from visapp.ingest.archive import parse_size


@dataclass(frozen=True)
class ServiceSettings:
    store_url: str
    queue_url: str | None
    work_dir: Path
    tokens: tuple[str, ...] = ()
    max_upload: int = 2 * 1024**3
    max_concurrent_uploads: int = 4
    max_queued_jobs: int = 20
    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0
    inline_limit: int = 64 * 1024**2
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        home = (cwd or Path.cwd()).resolve() / ".visapp"
        try:
            settings = cls(
                store_url=env.get("VISAPP_STORE_URL") or (home / "jobs").as_uri(),
                queue_url=env.get("VISAPP_QUEUE_URL") or None,
                work_dir=Path(env.get("VISAPP_WORK_DIR") or home / "work"),
                tokens=tuple(t.strip() for t in env.get("VISAPP_API_TOKEN", "").split(",") if t.strip()),
                max_upload=parse_size(env.get("VISAPP_MAX_UPLOAD", "2G")),
                max_concurrent_uploads=int(env.get("VISAPP_MAX_CONCURRENT_UPLOADS", "4")),
                max_queued_jobs=int(env.get("VISAPP_MAX_QUEUED_JOBS", "20")),
                heartbeat_s=float(env.get("VISAPP_HEARTBEAT_S", "10")),
                stale_after_s=float(env.get("VISAPP_STALE_AFTER_S", "60")),
                inline_limit=parse_size(env.get("VISAPP_INLINE_LIMIT", "64M")),
                environ=dict(env),
            )
        except ValueError as exc:
            raise VisError(f"a VISAPP_* setting is not a number: {exc}") from None
        if settings.stale_after_s <= 2 * settings.heartbeat_s:
            raise VisError(
                f"VISAPP_STALE_AFTER_S ({settings.stale_after_s:g}) must exceed twice VISAPP_HEARTBEAT_S "
                f"({settings.heartbeat_s:g}): a live worker would be taken for dead"
            )
        return settings

    @property
    def local_queue(self) -> Path:
        """The embedded queue's SQLite file (when no VISAPP_QUEUE_URL is set)."""
        return self.work_dir.parent / "queue.db"
