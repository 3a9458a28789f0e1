"""visapp.console: progress as a bar on a terminal, as a few log lines elsewhere; errors as one line."""

from __future__ import annotations

import io
import logging

import pytest

from visapp import console
from visapp.errors import VisError
from visapp.progress import Counter, Progress

pytestmark = pytest.mark.unit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="visapp")
    console.log.propagate = True  # let caplog see what the console handler would print
    yield caplog
    console.log.propagate = False


def test_a_long_task_gives_a_few_lines_in_a_log(log_lines, monkeypatch):
    clock = iter(float(t) for t in range(0, 100_000, 1))
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    display = console.progress_display(io.StringIO())
    counter = Counter(display, "validate", 20_000, "samples")
    for _ in range(20_000):
        counter.advance()
    lines = [r.getMessage() for r in log_lines.records]
    assert lines[0] == "validate: 20000 samples to do" and lines[-1].startswith("validate: 20000 samples done in")
    assert 3 <= len(lines) <= 12
    assert all(line.startswith("validate: ") for line in lines)


def test_lines_are_not_more_frequent_than_every_few_seconds(log_lines, monkeypatch):
    monkeypatch.setattr(console.time, "monotonic", lambda: 0.0)  # everything within one instant
    counter = Counter(console.progress_display(io.StringIO()), "convert", 1000)
    for _ in range(1000):
        counter.advance()
    assert len(log_lines.records) == 2  # the start and the end only


def test_epochs_are_one_line_each_with_their_metrics(log_lines):
    display = console.progress_display(io.StringIO())
    for epoch in range(1, 4):
        display(Progress("train", epoch, 3, "epoch", {"mAP50": 0.5 * epoch / 3, "box_loss": 1.25}))
    lines = [r.getMessage() for r in log_lines.records]
    assert lines == [
        "train: epoch 1/3  mAP50 0.1667  box_loss 1.25",
        "train: epoch 2/3  mAP50 0.3333  box_loss 1.25",
        "train: epoch 3/3  mAP50 0.5  box_loss 1.25",
    ]


def test_a_terminal_gets_a_bar_not_log_lines(log_lines):
    screen = Terminal()
    counter = Counter(console.progress_display(screen), "validate", 50, "samples")
    for _ in range(50):
        counter.advance()
    assert "validate" in screen.getvalue() and "50/50" in screen.getvalue()
    assert log_lines.records == []


def test_run_turns_a_user_error_into_one_line_and_status_2(capsys):
    def main() -> int:
        raise VisError("data/raw is not a folder: give the folder that holds the VOC dataset")

    assert console.run(main) == 2
    assert capsys.readouterr().err == "error: data/raw is not a folder: give the folder that holds the VOC dataset\n"


def test_output_never_fails_on_a_character_the_terminal_cannot_show(capsys):
    import sys

    strict = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    saved = sys.stdout
    sys.stdout = strict
    try:
        console.configure_logging()
        print("Se\udcf1al.jpg and Señal.jpg")  # a latin-1 byte as Python decodes it from a name, and an ñ
        strict.flush()
        written = strict.buffer.getvalue()
    finally:
        sys.stdout = saved
    assert written == b"Se\\udcf1al.jpg and Se\\xf1al.jpg\n"
