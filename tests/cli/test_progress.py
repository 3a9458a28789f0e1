"""Progress of a long validation (20,000 samples): through the callback, as a bar on a terminal (a pseudo-TTY),
and as at most 20 lines in a log."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from PIL import Image

from factory import data_config
from visapp.dataset.validate import validate_dataset
from visapp.formats.voc import BOX_KEYS, VocObject, annotation_xml

pytestmark = pytest.mark.integration

SAMPLES = 20_000
VISAPP = str(Path(sys.executable).parent / "visapp")


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 tiny distinct samples (8x8 PNGs, one box each): quick to write and to check."""
    raw = tmp_path_factory.mktemp("big") / "raw"
    (raw / "JPEGImages").mkdir(parents=True)
    (raw / "Annotations").mkdir()
    box = VocObject("circle", bndbox=dict(zip(BOX_KEYS, (2, 2, 6, 6), strict=True)))
    for i in range(SAMPLES):
        buffer = io.BytesIO()
        # Distinct mid-grey colours: no image is dark or bright, so the log holds progress lines, not findings.
        Image.new("RGB", (8, 8), (64 + i % 128, 64 + (i // 128) % 128, 64 + i // 16384)).save(buffer, "PNG")
        (raw / "JPEGImages" / f"{i:05d}.png").write_bytes(buffer.getvalue())
        (raw / "Annotations" / f"{i:05d}.xml").write_text(annotation_xml(f"{i:05d}.png", 8, 8, [box]))
    return raw


def test_validate_reports_each_sample_through_the_callback(big_dataset):
    updates = []
    result = validate_dataset(big_dataset, data_config(classes=["circle"]), progress=updates.append)
    assert result.report["accepted"] == SAMPLES
    assert {(u.task, u.total, u.unit) for u in updates} == {("validate", SAMPLES, "samples")}
    assert [u.done for u in updates] == list(range(SAMPLES + 1))


def test_a_terminal_shows_a_bar(big_dataset):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen(
        [VISAPP, "check", str(big_dataset), "--classes", "circle"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 600)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the pseudo-terminal closes with the process
            chunk = b""
        if not chunk:
            break
        screen += chunk
    assert proc.wait(timeout=60) == 0
    text = screen.decode("utf-8", "replace")
    assert "validate:" in text and f"{SAMPLES}/{SAMPLES}" in text and "\r" in text  # a bar, redrawn in place
    assert "samples to do" not in text  # not the log lines


def test_a_log_gets_at_most_20_lines(big_dataset, tmp_path):
    log = tmp_path / "check.log"
    with log.open("w") as handle:
        proc = subprocess.run(
            [VISAPP, "check", str(big_dataset), "--classes", "circle"], stdout=handle, stderr=subprocess.STDOUT
        )
    assert proc.returncode == 0
    text = log.read_text()
    assert len(text.splitlines()) <= 20, text
    assert "\x1b[" not in text and "\r" not in text
    assert f"validate: {SAMPLES} samples to do" in text and f"validated {SAMPLES} samples" in text
