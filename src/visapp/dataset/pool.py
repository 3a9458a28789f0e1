"""The data stages' process pools: how many workers, and how they start.

`$VISAPP_WORKERS` caps the workers (default: one per core). Workers are forked when this process runs no other
thread: fast, nothing is imported again. Forking a threaded process (the service, say) could copy a lock
another thread holds, so there they are spawned, or, where spawning costs more than it saves, not started.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

WORKERS_ENV = "VISAPP_WORKERS"


def cores(environ: dict[str, str] | None = None) -> int:
    """`$VISAPP_WORKERS`, else the number of cores."""
    environ = dict(os.environ) if environ is None else environ
    return int(environ.get(WORKERS_ENV) or 0) or (os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether workers may be forked: this process runs one thread, and the platform forks."""
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


def context(fork: bool) -> BaseContext:
    """A multiprocessing context that forks the workers, or spawns them."""
    return multiprocessing.get_context("fork" if fork else "spawn")
