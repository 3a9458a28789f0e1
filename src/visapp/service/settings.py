"""The service's settings, all from the environment (a container or an EC2 instance sets them; no file).

Each setting is declared once, below: its field, its variable, its default and what it means. `from_env` reads
them, and docs/service.md's table of variables is checked against this declaration by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.ingest.archive import parse_size

HOME = ".visapp"  # under the working folder: the defaults of the store, the queue and the scratch
HERE = Path()  # a placeholder: `from_env` puts the scratch under HOME


def _setting(env: str, default: Any, meaning: str, parse: Callable[[str], Any] = str, shown: str = "") -> Any:
    """A field read from `env` (parsed by `parse`), `default` when unset; `shown`: the default as the docs say it."""
    metadata = {"env": env, "parse": parse, "meaning": meaning, "shown": shown or f"`{default}`"}
    return field(default=default, metadata=metadata)


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in text.split(",") if token.strip())


@dataclass(frozen=True)
class ServiceSettings:
    """The service's settings (`from_env`): each field's metadata holds its environment variable and meaning."""

    store_url: str = _setting("VISAPP_STORE_URL", "", "the job store: a folder, or `s3://bucket/prefix`",
                              shown=f"`file://<cwd>/{HOME}/jobs`")  # fmt: skip
    queue_url: str | None = _setting("VISAPP_QUEUE_URL", None, "`redis://host:6379/0` shares the queue between "
                                     "machines; `sqlite:///path` (an absolute path)",
                                     shown=f"SQLite at `<cwd>/{HOME}/queue.db`")  # fmt: skip
    work_dir: Path = _setting("VISAPP_WORK_DIR", HERE, "a machine's scratch (an upload being checked, a training's "  # noqa: RUF009
                              "dataset and checkpoint) and its caches", Path, shown=f"`<cwd>/{HOME}/work`")  # fmt: skip
    tokens: tuple[str, ...] = _setting("VISAPP_API_TOKEN", (), "bearer token(s), comma-separated; without one "
                                       "`visapp serve` refuses to start (but `--open` on loopback)", _tokens,
                                       shown="none")  # fmt: skip
    max_upload: int = _setting("VISAPP_MAX_UPLOAD", 2 * 1024**3, "largest upload (413 beyond)", parse_size, "`2G`")
    max_concurrent_uploads: int = _setting("VISAPP_MAX_CONCURRENT_UPLOADS", 4, "uploads received at once (429 "
                                           "beyond, before the body is read)", int)  # fmt: skip
    max_queued_jobs: int = _setting("VISAPP_MAX_QUEUED_JOBS", 20, "jobs of a token being checked, queued or running "
                                    "(429 beyond)", int)  # fmt: skip
    inline_limit: int = _setting("VISAPP_INLINE_LIMIT", 64 * 1024**2, "uploads up to this size are checked in the "
                                 "request (201); larger ones by a worker (202)", parse_size, "`64M`")  # fmt: skip
    heartbeat_s: float = _setting("VISAPP_HEARTBEAT_S", 10.0, "how often the process checking an upload or training "
                                  "a job renews its lease", float, "`10`")  # fmt: skip
    stale_after_s: float = _setting("VISAPP_STALE_AFTER_S", 60.0, "a lease older than this is taken over by the "
                                    "reaper (must exceed twice the heartbeat)", float, "`60`")  # fmt: skip
    model_version: str | None = _setting("VISAPP_MODEL_VERSION", None, "the promoted model version the service "
                                         "serves (`yolo@v3.0.0`), fetched from the DVC remote at start; in "
                                         "`/health`, served at `/models/prod/download`", shown="none")  # fmt: skip

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> ServiceSettings:
        """The settings from the environment (the defaults where a variable is unset); paths under `cwd`'s `.visapp/`.

        Raises:
            VisError: a value that cannot be parsed, or a stale limit not above twice the heartbeat.
        """
        env = os.environ if environ is None else environ
        home = (cwd or Path.cwd()).resolve() / HOME
        values: dict[str, Any] = {}
        for setting in fields(cls):
            text = env.get(setting.metadata["env"], "")
            if not text.strip():
                continue
            try:
                values[setting.name] = setting.metadata["parse"](text)
            except ValueError as exc:
                raise VisError(f"{setting.metadata['env']}={text!r} cannot be used: {exc}") from None
        values.setdefault("store_url", (home / "jobs").as_uri())
        values.setdefault("work_dir", home / "work")
        settings = cls(**values)
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


def documented() -> list[tuple[str, str, str]]:
    """(variable, default as said, meaning) of every setting: the rows of docs/service.md's table."""
    return [(f.metadata["env"], f.metadata["shown"], f.metadata["meaning"]) for f in fields(ServiceSettings)]
