"""Huey, the job queue's library: the one place that reaches into its workings.

A consumer run in a thread of another process (the API's) must not set signal handlers (Python allows them in
the main thread only); Huey has no switch for that, so its private `_set_signal_handlers` is overridden here.
An upgrade of Huey that renames it touches this file only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huey import Huey
    from huey.consumer import Consumer


def consumer(huey: Huey, workers: int = 1, in_thread: bool = False) -> Consumer:
    """A Huey consumer of `workers` threads, no periodic tasks; `in_thread`: it runs in a thread of another
    process, so it sets no signal handlers."""
    from huey.consumer import Consumer

    class QuietConsumer(Consumer):  # type: ignore[misc]  # Huey has no type information: Consumer is Any
        def _set_signal_handlers(self) -> None:
            if not in_thread:
                super()._set_signal_handlers()

    return QuietConsumer(huey, workers=workers, worker_type="thread", periodic=False)
