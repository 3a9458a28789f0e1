"""Huey, where we lean on more than its public API: a consumer started from a thread that is not the main one."""

from __future__ import annotations

from typing import Any


def thread_consumer(huey: Any, **options: Any) -> Any:
    """A Huey consumer for a process whose main thread runs something else (the API's event loop).

    Python lets only the main thread set signal handlers, and Huey's consumer sets them when it starts: its
    `_set_signal_handlers` hook is the one thing overridden (the process's own handlers stay in charge).
    """
    from huey.consumer import Consumer

    class ThreadConsumer(Consumer):  # type: ignore[misc]
        def _set_signal_handlers(self) -> None:
            return None

    return ThreadConsumer(huey, **options)
