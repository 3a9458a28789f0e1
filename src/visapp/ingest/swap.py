"""The swap of a prepared dataset folder into `data/raw`, under a journal, and its recovery after a kill.

Commit: the journal (`.dvc/tmp/visapp-ingest.json`, holding the new `raw.dvc`) is written durably, then
`data/raw` is renamed to `data/.raw.old-XXXX`, the prepared folder to `data/raw`, and `data/raw.dvc` is
replaced atomically (write, fsync, rename): that last rename is the commit point. Then the journal, the old
copy and the preparation folder are removed, `/raw` is put in `data/.gitignore`, and the two files are
`git add`ed when DVC's `core.autostage` is on (all as `dvc add data/raw` does).

A kill at any moment leaves `data/raw` + `data/raw.dvc` as they were (before the first rename) or as the
complete new version (after the commit point). Between the first rename and the commit point (three system
calls) a kill leaves them mixed; the journal exists then, and `recover` (run by every ingest first) finishes
or undoes what it describes: before the commit point it renames the old folder back, after it it only
cleans up. Leftover preparation folders without a journal are removed. One ingest runs at a time (a lock
beside the journal).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from visapp.errors import VisError
from visapp.formats.dvcfile import dvc_file_for
from visapp.fsio import atomic_path, exclusive_lock, fsync_dir, os_error, sweep_abandoned, write_text
from visapp.integrations import git

log = logging.getLogger(__name__)

JOURNAL_NAME = "visapp-ingest.json"
LOCK_NAME = "visapp-ingest.lock"
PREPARING = ".{name}.ingest-"  # the folder a new version is prepared in, beside data/raw
OLD = ".{name}.old-"  # where the current version waits while the new one is swapped in
Phase = Callable[[str], None]  # told "journaled", "moved-old", "moved-new", "committed" as the swap passes them


@dataclass(frozen=True)
class Journal:
    """What a swap in progress leaves for `recover`: its folders (relative to the repository root) and the new
    .dvc file's text."""

    raw: str
    staging: str
    old: str
    new_dvc: str
    autostage: bool = False


def journal_path(repo_root: Path) -> Path:
    """Where an ingest's journal lies while it swaps a version in: `.dvc/tmp/` of the repository."""
    return repo_root / ".dvc" / "tmp" / JOURNAL_NAME


@contextmanager
def ingest_lock(repo_root: Path) -> Iterator[None]:
    """Hold the repository's ingest lock (one ingest at a time); a `VisError` says another ingest holds it."""
    busy = f"another `visapp ingest` is running in {repo_root}; wait for it to finish, then retry"
    with exclusive_lock(repo_root / ".dvc" / "tmp" / LOCK_NAME, busy):
        yield


def remove_tree(path: Path) -> None:
    """Remove a folder, a file or a link, if there is one (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def preparation_folder(raw: Path) -> Path:
    """A new, unique folder beside `raw` (same file system: the swap is a rename)."""
    try:
        return Path(tempfile.mkdtemp(prefix=PREPARING.format(name=raw.name), dir=raw.parent))
    except OSError as exc:
        raise os_error(exc, raw.parent, "create a folder in") from None


def recover(raw: Path, repo_root: Path) -> str | None:
    """Finish or undo an interrupted ingest (the caller holds the lock); a line saying what was done, or None.

    Also removes the preparation and old folders that an ingest killed before its journal was written left.
    """
    path = journal_path(repo_root)
    message = None
    if path.is_file():
        try:
            journal = Journal(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise VisError(f"cannot read the ingest journal {path}: {exc}; inspect data/ by hand") from None
        message = _apply_journal(repo_root, journal)
        path.unlink()
        fsync_dir(path.parent)
    swept = sorted(raw.parent.glob(PREPARING.format(name=raw.name) + "*"))
    swept += sorted(raw.parent.glob(OLD.format(name=raw.name) + "*"))
    for leftover in swept:
        remove_tree(leftover)
    for written in (dvc_file_for(raw), raw.parent / ".gitignore"):
        sweep_abandoned(written)
    if swept and not message:
        message = f"removed {len(swept)} folder(s) left by an ingest killed before it changed anything"
    return message


def _apply_journal(repo_root: Path, journal: Journal) -> str:
    raw = repo_root / journal.raw
    staging = repo_root / journal.staging
    old = repo_root / journal.old
    staged = staging / raw.name
    dvc_file = dvc_file_for(raw)
    current = dvc_file.read_text(encoding="utf-8") if dvc_file.is_file() else None
    rel = journal.raw
    if not staged.exists() and current == journal.new_dvc:
        _finish(raw, staging, old, repo_root, journal.autostage)
        return f"completed an interrupted ingest: {rel} holds the version it was writing"
    try:
        if not staged.exists() and raw.exists():
            raw.rename(staged)  # the new data had been moved in, but raw.dvc was not yet written
        if old.exists():
            old.rename(raw)
    except OSError as exc:
        raise VisError(
            f"cannot undo an interrupted ingest ({exc.strerror}): move {old} back to {raw} by hand"
        ) from None
    remove_tree(staging)
    return f"undid an interrupted ingest: {rel} and {rel}.dvc are as they were before it"


def _finish(raw: Path, staging: Path, old: Path, repo_root: Path, autostage: bool) -> list[str]:
    """After the commit point: what `dvc add` does for git, then remove the old data and the preparation folder.

    Returns notes for the user: the commit point is passed, so a failed `git add` is reported, not raised.
    """
    notes = []
    dvc_file = dvc_file_for(raw)
    gitignore = raw.parent / ".gitignore"
    if git.is_repository(repo_root):
        entry = f"/{raw.name}"
        lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
        if entry not in lines:
            write_text(gitignore, "\n".join([*lines, entry]) + "\n")
        if autostage:
            try:
                git.add(repo_root, [dvc_file, gitignore])
            except VisError as exc:
                rel = [p.relative_to(repo_root).as_posix() for p in (dvc_file, gitignore)]
                notes.append(f"{exc}; stage the new version yourself: `git add {' '.join(rel)}`")
    remove_tree(old)
    remove_tree(staging)
    return notes


def commit(
    raw: Path, staging: Path, repo_root: Path, new_dvc: str, autostage: bool, phase: Phase | None = None
) -> list[str]:
    """Swap `staging/<raw name>` in for `raw` under a journal; returns notes (a failed `git add`).

    Raises:
        VisError: the swap failed; it was undone (`raw` and its .dvc file are as they were).
    """
    phase = phase or (lambda name: None)
    old = Path(tempfile.mkdtemp(prefix=OLD.format(name=raw.name), dir=raw.parent))
    old.rmdir()  # reserve a unique name; the rename below creates it
    journal = Journal(
        raw=raw.relative_to(repo_root).as_posix(),
        staging=staging.relative_to(repo_root).as_posix(),
        old=old.relative_to(repo_root).as_posix(),
        new_dvc=new_dvc,
        autostage=autostage,
    )
    path = journal_path(repo_root)
    write_text(path, json.dumps(asdict(journal), indent=2))
    phase("journaled")
    try:
        if raw.exists():
            raw.rename(old)
        phase("moved-old")
        (staging / raw.name).rename(raw)
        phase("moved-new")
        with atomic_path(dvc_file_for(raw)) as tmp:
            tmp.write_text(new_dvc, encoding="utf-8", newline="\n")
    except BaseException as exc:
        _apply_journal(repo_root, journal)  # undo now; the journal stays if even that fails
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise os_error(exc, raw, "replace") from None
        raise
    phase("committed")
    notes = _finish(raw, staging, old, repo_root, autostage)
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return notes
