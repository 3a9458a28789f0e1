"""The reuse store: each sample's outcome of earlier runs, by a key of everything it depends on, in
`<folder>/outcomes.sqlite`, with each file's SHA-256 by its stat signature. Safe to delete at any time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from visapp.config import DataConfig
from visapp.dataset.sample_checks import FileDigest, SampleOutcome
from visapp.formats import SPLITS
from visapp.formats.voc_ids import listed_id, sample_id
from visapp.formats.voc_image_sets import ImageSet
from visapp.formats.voc_layout import SampleFiles
from visapp.integrations.dvc_env import repository_root

log = logging.getLogger(__name__)

CACHE_ENV = "VISAPP_VALIDATE_CACHE"

# The code that decides a sample's outcome: `visapp.dataset.sample_checks` and what it imports of ours (a test
# holds this list to those imports). Its source is part of every key, so an edit to any of these modules makes
# the next run check every sample again: no version number to remember to bump.
OUTCOME_MODULES = (
    "visapp",
    "visapp.dataset",
    "visapp.dataset.image_measures",
    "visapp.dataset.sample_checks",
    "visapp.errors",
    "visapp.formats",
    "visapp.formats.image_formats",
    "visapp.formats.images",
    "visapp.formats.manifest",
    "visapp.formats.report",
    "visapp.formats.voc",
    "visapp.formats.voc_ids",
    "visapp.fsio",
)
# The layout of outcomes.sqlite (its `user_version`): a store of another layout is emptied, not read.
SCHEMA_VERSION = 2


@functools.cache
def code_digest() -> str:
    """SHA-256 (hex) of the source of `OUTCOME_MODULES`: the same in every process of one checkout."""
    digest = hashlib.sha256()
    for name in OUTCOME_MODULES:
        digest.update(f"{name}\0".encode() + _module_code(name) + b"\0")
    return digest.hexdigest()


def _module_code(name: str) -> bytes:
    """A module's source, or its compiled code where no source ships."""
    import importlib.abc
    import importlib.util
    import marshal

    spec = importlib.util.find_spec(name)
    loader = spec.loader if spec is not None else None
    if not isinstance(loader, importlib.abc.InspectLoader):
        raise ImportError(f"{name} is not importable from files: the reuse store's key cannot be made")
    source = loader.get_source(name)
    return source.encode("utf-8") if source is not None else marshal.dumps(loader.get_code(name))


def outcome_key(
    files: SampleFiles,
    data: DataConfig,
    listed: list[str],
    conflict: str | None,
    image_sha256: str | None,
    xml_sha256: str | None,
    measure: bool = False,
) -> str:
    """Everything a sample's outcome depends on, hashed: the validation code (`code_digest`), the data params,
    the paths, the ImageSets lists naming it, its id conflict, whether its image is measured for the quality
    checks, and the content of its image and annotation (their SHA-256, hex)."""
    digest = hashlib.sha256()
    head = [code_digest(), _params_json(data), _files_json(files), listed, conflict, measure, image_sha256]
    digest.update(json.dumps(head).encode("utf-8", "surrogateescape"))
    digest.update(b"\0" if xml_sha256 is None else bytes.fromhex(xml_sha256))
    return digest.hexdigest()


def _files_json(files: SampleFiles) -> str:
    return json.dumps([files.image, files.annotation, files.rivals, files.hint])


def lists_naming(files: SampleFiles, splits: dict[str, ImageSet]) -> list[str]:
    """The ImageSets lists that name the sample's image."""
    return [split for split in SPLITS if files.image and split in splits and _in(files.image, splits[split])]


_params_seen: tuple[DataConfig, str] | None = None


def _params_json(data: DataConfig) -> str:
    """The data params as JSON: the same for every sample of a run, so made once per process, not per sample."""
    global _params_seen
    if _params_seen is None or _params_seen[0] is not data:
        _params_seen = (data, json.dumps(asdict(data), sort_keys=True, default=str))
    return _params_seen[1]


# A file changed this recently may change again within its timestamps' granularity without them showing it.
_SETTLED_NS = 2_000_000_000


def _signature(stat: os.stat_result) -> str | None:
    """What tells a file unchanged since its digest was taken, as git's and DVC's caches do: device, inode,
    size, modification and change times (a change time cannot be set back). None for a file changed in the
    last 2 s, whose digest is not kept: a second change within the timestamps' granularity would not show."""
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < _SETTLED_NS:
        return None
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def file_digests(
    files: SampleFiles, image: tuple[str | None, str | None] | None, xml: tuple[str | None, str | None] | None
) -> list[FileDigest]:
    """The digests a sample's files leave for the next run: (path, signature, SHA-256) of each file that has
    both (`image`, `xml`: (signature, SHA-256) or None)."""
    return [
        (rel, signature, sha)
        for rel, (signature, sha) in ((files.image, image or (None, None)), (files.annotation, xml or (None, None)))
        if rel and signature and sha
    ]


_STORE_ERRORS = (sqlite3.Error, OSError)


def _path_bytes(rel: str) -> bytes:
    """A path as the file system spells it: the bytes `os.fsdecode` made it from (a name need not be UTF-8)."""
    return rel.encode("utf-8", "surrogateescape")


def _path_of(stored: bytes) -> str:
    return stored.decode("utf-8", "surrogateescape")


class Reuse:
    """Outcomes of earlier runs by `outcome_key`, in `folder/outcomes.sqlite`: safe to delete at any time.

    The store also keeps each file's SHA-256 with its stat signature (`_signature`), so that the main process
    finds an unchanged sample's outcome without reading its files (`lookup`), before the pool starts. The pool
    reads the other samples' files and looks their outcome up by content (`get`): a file whose stat changed but
    whose bytes did not (a fresh `dvc checkout` relinks every file) is read and hashed, not checked again.
    Each process opens its own connection; the main process writes once a run is done. After a run the store
    keeps only that run's outcomes and files, so it does not grow with every dataset version.

    Paths are kept as their bytes (a file name need not be UTF-8: `name_not_utf8` is reported, never a crash).
    A store that cannot be opened, read or written (damaged, another layout, a read-only folder) only makes the
    run check everything.
    """

    FILE = "outcomes.sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._keys: set[str] = set()
        self._digests: dict[str, tuple[str, str]] | None = None  # path -> (stat signature, SHA-256)
        self._outcomes: dict[str, str] | None = None  # key -> outcome (JSON), for `lookup`

    def _connect(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.folder / self.FILE, timeout=60)
            with db:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS outcomes")
                    db.execute("DROP TABLE IF EXISTS files")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("CREATE TABLE IF NOT EXISTS outcomes (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL)"
                )
            self._db, self._pid = db, os.getpid()
            # Every key, read once: most lookups of a run that checks new files miss, and a miss then costs no query.
            self._keys = {row[0] for row in self._db.execute("SELECT key FROM outcomes")}
        return self._db

    def get(self, key: str) -> SampleOutcome | None:
        """The stored outcome of a key, None when there is none."""
        try:
            db = self._connect()
            if key not in self._keys:
                return None
            found = db.execute("SELECT value FROM outcomes WHERE key = ?", (key,)).fetchone()
            return SampleOutcome.from_json(found[0]) if found else None
        except (*_STORE_ERRORS, ValueError, TypeError, KeyError):  # a damaged store is only a slower run
            return None

    def _digest(self, raw_dir: Path, rel: str, digests: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
        """(stat signature, SHA-256) of the file as kept, when its signature is unchanged."""
        kept = digests.get(rel)
        if kept is None:
            return None
        try:
            signature = _signature(os.stat(f"{raw_dir}/{rel}"))  # noqa: PTH116  per file: no Path built
        except OSError:
            return None
        return kept if signature == kept[0] else None

    def lookup(
        self,
        raw_dir: Path,
        files: SampleFiles,
        data: DataConfig,
        splits: dict[str, ImageSet],
        conflict: str | None,
        measure: bool,
    ) -> SampleOutcome | None:
        """The earlier outcome of a sample whose files are unchanged (by their stat signatures) and whose key
        is stored; None: it is checked."""
        try:
            if self._digests is None or self._outcomes is None:
                # Read at once: most samples are looked up, and one query each would cost more.
                db = self._connect()
                self._digests = {
                    _path_of(path): (stat, sha)
                    for path, stat, sha in db.execute("SELECT path, stat, sha256 FROM files")
                }
                self._outcomes = dict(db.execute("SELECT key, value FROM outcomes"))
        except _STORE_ERRORS:  # a damaged store is only a slower run
            return None
        image = self._digest(raw_dir, files.image, self._digests) if files.image else None
        xml = self._digest(raw_dir, files.annotation, self._digests) if files.annotation else None
        if (files.image and image is None) or (files.annotation and xml is None):
            return None
        image_sha256, xml_sha256 = image[1] if image else None, xml[1] if xml else None
        key = outcome_key(files, data, lists_naming(files, splits), conflict, image_sha256, xml_sha256, measure)
        if key not in self._outcomes:
            return None
        try:
            earlier = SampleOutcome.from_json(self._outcomes[key])
        except (ValueError, TypeError, KeyError):  # a damaged outcome: the sample is checked again
            return None
        earlier.key, earlier.reused, earlier.digests = key, True, file_digests(files, image, xml)
        return earlier

    def keep(self, outcomes: dict[str, str], used: set[str], digests: list[FileDigest]) -> None:
        """Store this run's new outcomes and files' digests; forget outcomes of keys this run did not use and
        files it did not read."""
        try:
            db = self._connect()
            with db:
                db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?)", list(outcomes.items()))
                db.execute("CREATE TEMP TABLE IF NOT EXISTS used (key TEXT PRIMARY KEY)")
                db.execute("DELETE FROM used")
                db.executemany("INSERT OR IGNORE INTO used VALUES (?)", [(k,) for k in used])
                db.execute("DELETE FROM outcomes WHERE key NOT IN (SELECT key FROM used)")
                db.execute("DELETE FROM files")
                db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?)",
                    [(_path_bytes(rel), stat, sha) for rel, stat, sha in digests],
                )
        except _STORE_ERRORS as exc:
            log.warning(
                "could not keep validation outcomes for reuse in %s (%s); the next run checks everything",
                self.folder,
                exc,
            )


def read_with_signature(raw_dir: Path, rel: str) -> tuple[bytes | OSError, str | None]:
    """A file's bytes (or why it cannot be read) and its stat signature, taken before it is read."""
    try:
        with open(f"{raw_dir}/{rel}", "rb") as handle:  # noqa: PTH123  per file: no Path built
            signature = _signature(os.fstat(handle.fileno()))
            return handle.read(), signature
    except OSError as exc:
        return exc, None


def _in(image: str, image_set: ImageSet) -> bool:
    return listed_id(sample_id(image)) in image_set.ids


def default_folder(environ: Mapping[str, str] | None = None) -> Path:
    """Where the validate stage keeps outcomes: `$VISAPP_VALIDATE_CACHE`, else `.cache/validate` in the
    repository (`visapp.integrations.dvc_env.repository_root`: also for a queued experiment, whose temporary copy
    DVC deletes), outside every stage output."""
    environ = os.environ if environ is None else environ
    return (
        Path(environ[CACHE_ENV]) if environ.get(CACHE_ENV) else repository_root(environ=environ) / ".cache" / "validate"
    )
