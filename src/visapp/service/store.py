"""The job store: one URL (`file:///...` or `s3://bucket/prefix`, through fsspec) holds every job.

    <root>/<job_id>/job.json            the job's record (visapp.service.records)
    <root>/<job_id>/upload.zip|.tar     the uploaded archive, as received
    <root>/<job_id>/validated/          report.json, manifest.jsonl
    <root>/<job_id>/metadata/           dataset_metadata.json, figures
    <root>/<job_id>/checkpoint/<epoch>/ the training's checkpoint folder as each epoch left it
    <root>/<job_id>/checkpoint.json     which of those is whole: written after its folder, so a worker killed
                                        mid-upload leaves the previous one named
    <root>/<job_id>/model/              best.pt, metrics.json, results.csv, train.log
    <root>/<job_id>/leases/<attempt>    who runs which attempt: created exclusively, never overwritten

Writes are whole: a local file is written beside and renamed; an S3 object is one PUT. Exclusive creation (a
lease) is `open(..., "x")` locally and a conditional PUT (`If-None-Match: *`) on S3, so that two workers or
two reapers can never both win. Job ids are checked before any path is built: nothing outside a job's folder
can be named.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from visapp.errors import VisError
from visapp.fsio import dumps_json, exclusive_lock, write_text

JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")
RECORD = "job.json"


class UnknownJob(VisError):
    """No job with this id (or not a job id at all)."""


def new_job_id() -> str:
    """22 URL-safe characters from 128 random bits: unguessable."""
    return secrets.token_urlsafe(16)


def is_job_id(text: str) -> bool:
    """Whether `text` has the form of a job id (so it is safe in a path)."""
    return bool(JOB_ID.fullmatch(text))


class JobStore:
    """Records and files of jobs under one URL."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self._thread_locks: dict[str, threading.Lock] = {}
        options: dict[str, Any] = {}
        if url.startswith("s3://"):
            # Every process must see every job at once: no listing cache, no shared instance.
            options = {"use_listings_cache": False, "skip_instance_cache": True}
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.root = root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ paths

    def path(self, job_id: str, *parts: str) -> str:
        """The store path of a job's file; `UnknownJob` for a text that is not a job id."""
        if not is_job_id(job_id):
            raise UnknownJob(f"{job_id!r} is not a job id")
        return "/".join([self.root, job_id, *parts])

    def job_ids(self) -> list[str]:
        """Every job's id (folders with a record), sorted."""
        return [name for name in self._listed(self.root) if is_job_id(name)]

    def _listed(self, folder: str) -> list[str]:
        """The names of a folder's entries, sorted; none when it does not exist."""
        try:
            entries = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def has_job(self, job_id: str) -> bool:
        """Whether the job exists (has a record)."""
        return is_job_id(job_id) and self.exists(job_id, RECORD)

    def exists(self, job_id: str, name: str) -> bool:
        """Whether the job has the file `name`."""
        return bool(self.fs.exists(self.path(job_id, name)))

    # ------------------------------------------------------------ records

    def read_bytes(self, job_id: str, name: str) -> bytes | None:
        """A file's bytes; None when there is none."""
        try:
            with self.fs.open(self.path(job_id, name), "rb") as handle:
                return bytes(handle.read())
        except FileNotFoundError:
            return None

    def read_json(self, job_id: str, name: str) -> Any:
        """A JSON file's content; None when there is none."""
        import json

        data = self.read_bytes(job_id, name)
        return None if data is None else json.loads(data)

    def write_json(self, job_id: str, data: Any, name: str) -> None:
        """Write `data` as the job's JSON file `name` (whole: atomically on a local store, one PUT on S3)."""
        text = dumps_json(data)
        if self.local:
            write_text(self.path(job_id, name), text)
        else:
            self.fs.pipe_file(self.path(job_id, name), text.encode("utf-8"))

    def create(self, job_id: str, name: str, data: bytes) -> bool:
        """Create `name` with `data` unless it exists; True when this call created it (the winner)."""
        path = self.path(job_id, name)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                with Path(path).open("xb") as handle:
                    handle.write(data)
            except FileExistsError:
                return False
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    @contextlib.contextmanager
    def locked(self, job_id: str) -> Iterator[None]:
        """Serialise read-modify-write of a record: between the threads of this process (a heartbeat beside the
        work), and between the processes of this machine on a local store. On S3, where each writer owns its
        fields (see visapp.service.records), processes are not serialised."""
        with self._thread_locks.setdefault(job_id, threading.Lock()):
            if not self.local:
                yield
                return
            busy = f"job {job_id}: another process held its record for 30 s"
            with exclusive_lock(Path(self.path(job_id, ".lock")), busy, timeout=30):
                yield

    # ------------------------------------------------------------ files

    @contextlib.contextmanager
    def writer(self, job_id: str, name: str) -> Iterator[IO[bytes]]:
        """A binary file to stream `name` into; it appears whole when the block ends, not at all on error."""
        path = self.path(job_id, name)
        if self.local:
            from visapp.fsio import atomic_path

            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                yield handle
            return
        with self.fs.open(path, "wb") as handle:  # a multipart upload, completed only on a clean close
            yield handle

    def reader(self, job_id: str, name: str) -> IO[bytes]:
        """The job's file `name`, open for reading; `UnknownJob` when there is none."""
        try:
            handle: IO[bytes] = self.fs.open(self.path(job_id, name), "rb")
        except FileNotFoundError:
            raise UnknownJob(f"job {job_id} has no {name}") from None
        return handle

    def put(self, job_id: str, name: str, local: Path) -> None:
        """Upload a file or a folder (replacing what was there)."""
        target = self.path(job_id, name)
        if local.is_dir():
            self.remove(job_id, name)
            self.fs.put(str(local), target, recursive=True)
        elif self.local:
            from visapp.fsio import atomic_path

            with atomic_path(target) as tmp:
                shutil.copyfile(local, tmp)
        else:
            self.fs.put_file(str(local), target)

    def names(self, job_id: str, folder: str) -> list[str]:
        """The names of the entries of a job's folder, sorted; none when it does not exist."""
        return self._listed(self.path(job_id, folder))

    def remove(self, job_id: str, name: str) -> None:
        """Delete a file or a folder; nothing when it is not there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(job_id, name), recursive=True)

    def delete_job(self, job_id: str) -> None:
        """Remove a job's folder and everything in it (its record last: a crash midway leaves a job to delete)."""
        for name in self._listed(self.path(job_id)):
            if name not in (RECORD, ".lock"):
                self.remove(job_id, name)
        self.remove(job_id, RECORD)
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.rm(self.path(job_id), recursive=True)

    def get(self, job_id: str, name: str, local: Path) -> bool:
        """Download a file or a folder to `local`; False when the store has none."""
        source = self.path(job_id, name)
        if not self.fs.exists(source):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.fs.isdir(source):
            shutil.rmtree(local, ignore_errors=True)
            self.fs.get(source + "/", str(local), recursive=True)
        else:
            self.fs.get_file(source, str(local))
        return True

    def check(self) -> str:
        """A health verdict: the store can be listed (raises when it cannot)."""
        self.fs.ls(self.root, detail=False) if self.fs.exists(self.root) else None
        return f"reachable ({self.url})"
