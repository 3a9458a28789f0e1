"""Scratch folders against the sweep running beside them in the same process (the reaper's thread), as in
`visapp serve` with its worker: a sweep that removes an empty job folder at the moment a new scratch folder is
made in it must not make that scratch fail."""

from __future__ import annotations

import threading

import pytest

from visapp.service.scratch import scratch, sweep
from visapp.service.store import new_job_id

pytestmark = pytest.mark.unit

ROUNDS = 3000


def test_scratch_folders_are_made_while_a_sweep_removes_empty_job_folders(tmp_path):
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweeping() -> None:
        while not stop.is_set():
            try:
                sweep(tmp_path)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    sweeper = threading.Thread(target=sweeping)
    sweeper.start()
    try:
        for _ in range(ROUNDS):
            job_id = new_job_id()
            with scratch(tmp_path, job_id, "upload") as folder:
                (folder / "data.zip").write_bytes(b"x")
            with scratch(tmp_path, job_id, "check") as folder:
                assert folder.is_dir()
    finally:
        stop.set()
        sweeper.join()
    assert not errors, errors
    assert not [p for p in tmp_path.iterdir()], sorted(tmp_path.rglob("*"))
