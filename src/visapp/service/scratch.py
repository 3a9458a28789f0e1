"""A machine's scratch folders (`VISAPP_WORK_DIR/<job_id>/<name>`), each locked by the process that uses it.

An upload being received or checked, a training's dataset and checkpoint: each lives in a scratch folder that
its process holds an OS lock on (`<name>.lock` beside it, `flock`) for as long as it uses it. The lock goes when
the process goes, however it ends, so a `sweep` (at every start of the API or a worker, and each round of the
reaper) removes exactly the folders whose process died: never one in use, whichever process of the machine
sweeps. A folder is removed, then its lock file, then the job's folder once empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from visapp.service.store import is_job_id

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
CACHE = "cache"  # beside the scratch folders: what outlives one piece of work (validate's reuse store)
ORPHAN_AFTER_S = 600  # a folder without a lock file (written by an older release): removed when this old
_HELD: set[Path] = set()  # the folders this process holds (flock does not stop a second lock in one process)


def _try_lock(lock_path: Path) -> int | None:
    """An fd holding an exclusive lock on `lock_path`, or None when another process holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove(folder: Path, lock_path: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        lock_path.unlink()
    with contextlib.suppress(OSError):  # the job's folder, once nothing else of it is here
        folder.parent.rmdir()


@contextlib.contextmanager
def scratch(work_dir: Path, job_id: str, name: str) -> Iterator[Path]:
    """A fresh, empty folder `work_dir/job_id/name`, locked while the block runs and removed afterwards.

    Raises:
        RuntimeError: another live process holds that folder (a scratch name is unique to one piece of work).
    """
    folder = Path(work_dir) / job_id / name
    lock_path = folder.with_name(name + LOCK_SUFFIX)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(lock_path)
    if fd is None or folder in _HELD:
        if fd is not None:
            os.close(fd)
        raise RuntimeError(f"the scratch folder {folder} is in use by another process")
    _HELD.add(folder)
    try:
        shutil.rmtree(folder, ignore_errors=True)  # what a dead process left under this name
        folder.mkdir()
        yield folder
    finally:
        _remove(folder, lock_path)
        _HELD.discard(folder)
        os.close(fd)


def sweep(work_dir: Path) -> list[Path]:
    """Remove the scratch folders (and their lock files) of processes that died; the folders removed."""
    removed: list[Path] = []
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return removed
    for job_dir in sorted(p for p in work_dir.iterdir() if p.is_dir() and is_job_id(p.name)):
        for entry in sorted(job_dir.iterdir()):
            if entry.name.endswith(LOCK_SUFFIX):
                folder = entry.with_name(entry.name.removesuffix(LOCK_SUFFIX))
                if folder in _HELD:
                    continue
                fd = _try_lock(entry)
                if fd is None:
                    continue  # a live process works in it
                try:
                    _remove(folder, entry)
                finally:
                    os.close(fd)
                removed.append(folder)
            elif entry.is_dir() and not entry.with_name(entry.name + LOCK_SUFFIX).exists():
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > ORPHAN_AFTER_S:
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
        with contextlib.suppress(OSError):
            job_dir.rmdir()
    if removed:
        log.info("removed %d scratch folder(s) of processes that died: %s", len(removed),
                 ", ".join(f"{p.parent.name}/{p.name}" for p in removed[:5]))  # fmt: skip
    return removed
