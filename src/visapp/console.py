"""What an entry point (stage script, `visapp`) needs to talk to a person: logging, progress display, exit codes.

Configured once per process by `run(main)`: log records go to stderr as plain lines (`warning: ...` and
`error: ...` prefixed), output streams never fail on a character the terminal's encoding lacks, and a
`VisError` ends the process with its message and status 2 instead of a traceback.

Progress (`visapp.progress`) is shown as a bar when stderr is a terminal, and otherwise (a log file, CI, DVC
capturing a stage) as a few lines: the start, every tenth of the way at most every few seconds, and the end.
A training's epochs are one line each, everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from visapp.errors import VisError
from visapp.progress import Progress, ProgressCallback

log = logging.getLogger("visapp")

MIN_SECONDS_BETWEEN_LINES = 5.0  # non-terminal progress: not more often than this (but the last line)
UNKNOWN_TOTAL_EVERY_S = 30.0
EPOCH_UNIT = "epoch"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time (a test's capture, a redirection), not the one at set-up."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _Formatter(logging.Formatter):
    """`message` for information, `warning: message` / `error: message` above it."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def _tolerant(stream: Any) -> None:
    """Write characters the stream's encoding lacks as escapes (a latin-1 terminal, a file name in bytes)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


def configure_logging(level: int = logging.INFO) -> None:
    """Plain log lines on stderr for the `visapp` loggers; idempotent."""
    for stream in (sys.stdout, sys.stderr):
        _tolerant(stream)
    if any(isinstance(handler, _StderrHandler) for handler in log.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (False for a closed or a replaced stream without `isatty`)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())


class _LogLines:
    """Progress as a few log lines: suits files, CI logs and DVC's captured stage output."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[float, float, int]] = {}  # task -> (started, last line at, last tenth)

    def __call__(self, update: Progress) -> None:
        now = time.monotonic()
        if update.unit == EPOCH_UNIT:
            if update.done:
                detail = _format_metrics(dict(update.metrics))
                log.info("%s: %s %d/%s  %s", update.task, update.unit, update.done, update.total or "?", detail)
            return
        started, last, tenth = self.tasks.get(update.task, (now, 0.0, -1))
        if update.task not in self.tasks:
            if update.total is None:
                log.info("%s: started", update.task)
            else:
                log.info("%s: %d %s to do", update.task, update.total - update.done, update.unit)
            self.tasks[update.task] = (now, now, 0)
            return
        if update.finished:
            log.info("%s: %d %s done in %.1f s", update.task, update.done, update.unit, now - started)
            del self.tasks[update.task]
            return
        if update.total:
            current = 10 * update.done // update.total
            due = current > tenth and now - last >= MIN_SECONDS_BETWEEN_LINES
        else:
            current, due = tenth, now - last >= UNKNOWN_TOTAL_EVERY_S
        if due:
            share = f" ({100 * update.done // update.total}%)" if update.total else ""
            log.info("%s: %d/%s %s%s", update.task, update.done, update.total or "?", update.unit, share)
            self.tasks[update.task] = (started, now, current)


class _Bars:
    """Progress as one tqdm bar per task, on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bars: dict[str, Any] = {}
        self.lines = _LogLines()

    def __call__(self, update: Progress) -> None:
        if update.unit == EPOCH_UNIT:  # a training prints its own bars on a terminal: one line per epoch here
            self.lines(update)
            return
        from tqdm import tqdm

        bar = self.bars.get(update.task)
        if bar is None:
            bar = tqdm(total=update.total, desc=update.task, unit=f" {update.unit}", file=self.stream, leave=True)
            self.bars[update.task] = bar
        bar.update(update.done - bar.n)
        if update.finished:
            bar.close()
            del self.bars[update.task]


def progress_display(stream: TextIO | None = None) -> ProgressCallback:
    """A progress callback for a person: a bar on a terminal, a few log lines elsewhere."""
    stream = stream or sys.stderr
    return _Bars(stream) if is_terminal(stream) else _LogLines()


def run(main: Callable[[], int | None]) -> int:
    """Run an entry point: logging configured, a `VisError` as one line and exit status 2, Ctrl-C as 130."""
    configure_logging()
    try:
        return main() or 0
    except VisError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
