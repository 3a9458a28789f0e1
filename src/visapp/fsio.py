"""Atomic file and folder writes: a reader (or DVC) never sees a half-written output."""

from __future__ import annotations

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


def _writable_parent(path: Path) -> Path:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VisError(f"cannot create folder {parent}: {exc.strerror}; check its permissions and free space") from None
    return parent


def _sweep_abandoned(parent: Path, name: str) -> None:
    """Remove temporaries of `name` whose writer is gone (killed, so its `finally` never ran).

    Their names hold the writer's pid. Left alone, they would stay beside the output for good: a partial copy
    of it on disk, and untracked files that `git status` (so `visapp release`) reports.
    """
    prefix = f".{name}."
    owners = {p: p.name[len(prefix) :].split(".", 1)[0] for p in parent.glob(f"{glob.escape(prefix)}*.tmp")}
    owners = {p: int(pid) for p, pid in owners.items() if pid.isdigit()}
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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on failure it is removed.

    Works for files and folders. The temporary name is `.{name}.{pid}.*.tmp`, in the same folder, so the final
    rename is atomic on the same file system; those of a writer that was killed are removed first.
    """
    path = Path(path)
    parent = _writable_parent(path)
    _sweep_abandoned(parent, path.name)
    try:  # a read-only folder fails here, before anything is written
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise VisError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from None
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
            target.replace(path)
    except OSError as exc:
        raise VisError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from None
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
    write_text(path, dumps_json(data))
