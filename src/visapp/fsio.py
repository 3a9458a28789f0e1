"""Files written whole or not at all, exclusive locks, and OS errors as messages a person can act on.

Every output of the library is written through `atomic_path`: a reader (DVC, a second process, a user after a
kill) sees the old file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visapp.errors import VisError


def os_error(exc: OSError, path: Path | str, action: str = "write") -> VisError:
    """An environment failure as a `VisError` that says what failed, where, and what to do."""
    where = f"{action} {path}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return VisError(f"cannot {where}: no space left on the device (or quota reached); free some space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return VisError(f"cannot {where}: permission denied; make it readable and writable for this user and retry")
    if exc.errno == errno.EROFS:
        return VisError(f"cannot {where}: the file system is read-only; use a writable location")
    if exc.errno == errno.ENAMETOOLONG:
        return VisError(f"cannot {where}: the name is too long for this file system; shorten it")
    if exc.errno == errno.EFBIG:
        return VisError(f"cannot {where}: file too large for this file system or the process' file size limit")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and "folder" in action:
        return VisError(f"cannot {where}: a file stands where the folder should be; move or remove that file")
    if exc.errno == errno.ELOOP:
        return VisError(f"cannot {where}: a symbolic link loop; replace the link with the file it should point to")
    return VisError(f"cannot {where}: {exc.strerror or exc}")


def unreadable(exc: OSError, path: Path | str, what: str = "it") -> str:
    """Why `what` (a file or folder at `path`) cannot be read, and what to do, for an input's issue message."""
    path = Path(path)
    if exc.errno == errno.ELOOP:
        return f"{what} is a symbolic link that loops back on itself: replace it by the file or folder it points to"
    if exc.errno == errno.ENOENT and path.is_symlink():
        try:
            target = str(path.readlink())
        except OSError:
            target = "a path"
        return f"{what} is a symbolic link to {target}, which does not exist: copy the real file in its place"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{what} cannot be read (permission denied): make it readable for this user (chmod a+rX)"
    if exc.errno == errno.EIO:
        return f"{what} cannot be read (an I/O error of the disk): copy it again from its source"
    return f"{what} cannot be read ({exc.strerror or exc})"


def is_plain_relpath(rel: str) -> bool:
    """A relative POSIX path as a folder walk writes it (`a/b.jpg`: no leading `/`, no empty, `.` or `..`
    part). For such a path string operations give what pathlib and os.path would, at a tenth of the cost:
    the data stages handle paths once per file of a dataset."""
    if not rel or rel[0] == "/" or rel[-1] == "/" or "//" in rel:
        return False
    parts = rel.split("/")
    return "." not in parts and ".." not in parts


def _writable_parent(path: Path) -> Path:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, parent, "create the folder") from None
    return parent


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash after it cannot bring the old entry back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles: the rename is atomic all the same
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def sweep_abandoned(path: Path) -> None:
    """Remove the temporaries `atomic_path(path)` left when its writer was killed (its `finally` never ran).

    Their names hold the writer's pid. Left alone, they would stay beside the output for good: a partial copy
    of it on disk, and untracked files that `git status` (so `visapp release`) reports.
    """
    parent, prefix = path.parent, f".{path.name}."
    pids = {p: p.name[len(prefix) :].split(".", 1)[0] for p in parent.glob(f"{glob.escape(prefix)}*.tmp")}
    owners = {p: int(pid) for p, pid in pids.items() if pid.isdigit()}
    if not owners:
        return
    import psutil  # portable (os.kill(pid, 0) would terminate the process on Windows)

    for stale, pid in owners.items():
        try:  # a killed writer may linger as a zombie until its new parent reaps it: gone all the same
            alive = pid == os.getpid() or psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        except psutil.Error:
            alive = True
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on failure it is removed.

    Works for files and folders. The temporary name is `.{name}.{pid}.*.tmp`, in the same folder, so the final
    rename is atomic on the same file system; those of a writer that was killed are removed first. A file is
    flushed to disk (fsync) before the rename, and the rename itself after it: after a power cut the path holds
    the old or the new bytes. A folder's files are left to the OS to flush (thousands of fsyncs would cost more
    than rerunning the stage that wrote them).
    """
    path = Path(path)
    parent = _writable_parent(path)
    sweep_abandoned(path)
    try:  # a read-only folder fails here, before anything is written
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise os_error(exc, path) from None
    target = tmp / "out"
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.old.", suffix=".tmp", dir=parent))
            path.rename(old / "out")
            target.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if target.is_file():
                _fsync_file(target)
            target.replace(path)
        fsync_dir(parent)
    except OSError as exc:
        raise os_error(exc, path) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (UTF-8, '\\n' line ends)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def dumps_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as deterministic JSON (`dumps_json`), atomically."""
    write_text(path, dumps_json(data))


@contextmanager
def exclusive_lock(lock_path: Path, busy: str, timeout: float = 0) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created as needed), waiting up to `timeout` seconds (0: fail at
    once) before failing with `busy` as the message.

    The operating system releases the lock when the process dies, so a killed holder never blocks the next run.
    """
    from filelock import FileLock, Timeout

    _writable_parent(lock_path)
    lock = FileLock(lock_path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise VisError(busy) from None
    except OSError as exc:
        raise os_error(exc, lock_path, "lock") from None
    try:
        yield
    finally:
        lock.release()
