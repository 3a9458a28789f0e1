"""A machine's scratch folders (`VISAPP_WORK_DIR/<job_id>/<name>`), each locked by the process that uses it.

An upload being received or checked, a training's dataset and checkpoint: each lives in a scratch folder that
its process holds an OS lock on (`<name>.lock` beside it, `flock`) for as long as it uses it. The lock goes when
the process goes, however it ends, so a `sweep` (at every start of the API or a worker, and each round of the
reaper) removes exactly the folders whose process died: never one in use, whichever process of the machine
sweeps. A folder is removed, then its lock file, then the job's folder once empty. A sweep and a new scratch
folder may meet on one job folder at any moment (the reaper's thread beside a request): the new one makes its
job folder again if a sweep took it, waits while a sweep holds its new lock file, and a lock on a lock file that
was unlinked meanwhile counts as none.
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
WAIT_S = 10.0  # how long a new scratch folder waits for a lock a sweep holds before it says "in use"
ORPHAN_AFTER_S = 600  # a folder without a lock file (written by an older release): removed when this old
_HELD: set[Path] = set()  # the folders this process holds (flock does not stop a second lock in one process)


def _try_lock(lock_path: Path, create: bool = True) -> int | None:
    """An fd holding an exclusive lock on `lock_path`, or None when another process holds it.

    Raises:
        FileNotFoundError: the lock file (or, with `create`, its folder) is gone, or was removed while it was
            being locked: whoever held it has ended, and the caller looks again.
    """
    fd = os.open(lock_path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A lock on a file that was unlinked meanwhile guards nothing: the path may name a newer lock file now.
        if os.fstat(fd).st_ino != lock_path.stat().st_ino:
            raise FileNotFoundError(lock_path)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(folder: Path, lock_path: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        lock_path.unlink()
    with contextlib.suppress(OSError):  # the job's folder, once nothing else of it is here
        folder.parent.rmdir()


def _lock_in_job_folder(lock_path: Path) -> int | None:
    """`_try_lock`, making the job's folder first; None when another process holds the lock for `WAIT_S`.

    A sweep (another thread or process) removes a job folder that is empty, so it may remove this one between its
    making and the lock file's: then it is made again. A sweep also holds, for as long as it removes a dead
    process's folder, the lock of any lock file nobody holds, a new one included: then the lock is tried again
    until the sweep is done with it.
    """
    deadline = time.monotonic() + WAIT_S
    while True:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = _try_lock(lock_path)
        except FileNotFoundError:
            continue
        if fd is not None or time.monotonic() > deadline:
            return fd
        time.sleep(0.01)


@contextlib.contextmanager
def scratch(work_dir: Path, job_id: str, name: str) -> Iterator[Path]:
    """A fresh, empty folder `work_dir/job_id/name`, locked while the block runs and removed afterwards.

    Raises:
        RuntimeError: another live process holds that folder (a scratch name is unique to one piece of work).
    """
    folder = Path(work_dir) / job_id / name
    lock_path = folder.with_name(name + LOCK_SUFFIX)
    fd = _lock_in_job_folder(lock_path)
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
        try:
            entries = sorted(job_dir.iterdir())
        except FileNotFoundError:  # its last scratch folder ended a moment ago, and took it
            continue
        for entry in entries:
            if entry.name.endswith(LOCK_SUFFIX):
                folder = entry.with_name(entry.name.removesuffix(LOCK_SUFFIX))
                if folder in _HELD:
                    continue
                try:
                    fd = _try_lock(entry, create=False)
                except FileNotFoundError:  # its scratch ended meanwhile and removed it
                    continue
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
