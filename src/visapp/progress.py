"""Progress of long work as data: library functions report `Progress` updates to a callback, faces show them.

A long operation (validate, convert, metadata, ingest, the epochs of a training) takes a `progress` argument,
a callable that receives a `Progress` after each unit of work. The library never draws: the command line and
the stage scripts turn the updates into a bar on a terminal or a few log lines (`visapp.console`), the job
worker into a job's status. `None` means nobody is listening.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """Where one task stands: `done` of `total` units (total None: unknown), and the latest numbers if any."""

    task: str  # "validate", "convert", "metadata", "ingest", "train", ...
    done: int
    total: int | None = None
    unit: str = "files"
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether every unit is done (never, when the total is unknown)."""
        return self.total is not None and self.done >= self.total


ProgressCallback = Callable[[Progress], None]


class Counter:
    """Counts the units of one task and reports each step: `advance()` once per unit, after the unit is done."""

    def __init__(self, callback: ProgressCallback | None, task: str, total: int | None, unit: str = "files") -> None:
        self.callback, self.task, self.total, self.unit = callback, task, total, unit
        self.done = 0
        self.report()

    def report(self, metrics: Mapping[str, float] | None = None) -> None:
        """Tell the callback where the task stands (with the latest numbers, if any)."""
        if self.callback is not None:
            self.callback(Progress(self.task, self.done, self.total, self.unit, dict(metrics or {})))

    def advance(self, count: int = 1, metrics: Mapping[str, float] | None = None) -> None:
        """Count `count` more units done and report."""
        self.done += count
        self.report(metrics)
