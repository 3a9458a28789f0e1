"""Archives (ZIP and tar) -> a vetted list of entries, and a bounded, streaming extraction into a fresh folder.

Every entry is checked before the first byte is written, and the whole archive is refused when one entry
is bad (a half-extracted dataset is worse than none). Refused, each with its own `ArchiveRefused.code`:

| code | what |
| --- | --- |
| `not_archive`, `corrupt` | not a ZIP or tar archive; a damaged directory or header, a CRC error, undecodable data |
| `unsafe_path` | an absolute path (`/x`, `C:\\x`, `\\\\server\\share`), a `..` component, a control character |
| `symlink` | a symbolic or hard link, or another special file (FIFO, device, socket) |
| `encrypted` | an encrypted ZIP entry (flag bit 0x1): we cannot read it, and will not ask for a password |
| `unsupported` | a compression method Python cannot read (e.g. Deflate64, which Windows' Explorer writes for >2 GB) |
| `legacy_encoding` | a non-ASCII name in a legacy code page (a ZIP without the UTF-8 flag or an Info-ZIP Unicode |
|   | Path field, a tar name that is not UTF-8): its bytes could mean anything, so we do not guess |
| `duplicate` | the same name twice, names equal after case folding or Unicode normalisation, a file that is also |
|   | used as a folder |
| `too_many_entries`, `too_large`, `ratio` | past `ArchiveLimits` (a ZIP or tar bomb): checked on the declared |
|   | sizes first, then on the bytes actually written, as a lying header cannot be trusted |
| `nested_archive` | (`visapp.ingest.sources`) no XML and no image, only another archive (a ZIP in a ZIP): |
|   | the message says to unpack it and ingest the inner archive |

Accepted and normalised: backslashes are path separators (Windows PowerShell 5's Compress-Archive writes
them), names are stored as Unicode NFC, and directory entries only create folders. Operating system litter
(`LITTER_FILES`, `LITTER_DIRS`: macOS `._*` AppleDouble resource forks, `__MACOSX/`, `.DS_Store`, `Icon\\r`,
`.Spotlight-V100/`, `.Trashes/`, `.fseventsd/`; Windows `Thumbs.db`, `ehthumbs.db`, `desktop.ini`,
`$RECYCLE.BIN/`; ...) is recognised by its name, at any depth, and skipped unread (counted in `litter`). The
format (ZIP, or tar plain or compressed with gzip, bzip2 or xz) comes from the file's bytes, not its name.

Nothing is written outside the destination folder, and on any failure that folder is removed.
"""

from __future__ import annotations

import contextlib
import lzma
import re
import shutil
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from visapp.errors import VisError
from visapp.fsio import os_error
from visapp.progress import Counter, ProgressCallback

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
CHUNK = 1 * MIB  # read/write unit: memory per entry stays at this, whatever the entry's size

# Operating system litter, never data: casefolded name -> how `visapp ingest` names it. Folders: everything
# under them; files: at any depth. `._*` files (AppleDouble: the resource fork and Finder metadata that macOS
# writes beside each file on non-Apple file systems and into archives) and Linux's `.Trash-<uid>/` go by pattern.
LITTER_DIRS = {
    name.casefold(): name + "/"
    for name in (
        "__MACOSX",
        ".Spotlight-V100",
        ".Trashes",
        ".fseventsd",
        ".TemporaryItems",
        ".DocumentRevisions-V100",
        "$RECYCLE.BIN",
        "System Volume Information",
    )
}
LITTER_FILES = {
    name.casefold(): name
    for name in (".DS_Store", ".localized", "Thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini")
}
APPLE_DOUBLE = "._"
APPLE_DOUBLE_KIND = "macOS ._ resource forks"
ICON_FILE = "Icon\r"  # a folder's custom icon on macOS: the one litter name with a control character in it
ICON_KIND = "Icon\\r"
LINUX_TRASH = re.compile(r"\.trash-\d+")
# What an archive's first bytes are: ZIP, or a tar, plain (magic at 257) or compressed.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
ARCHIVE_KINDS = "a ZIP or tar archive (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz)"
# Errors that reading a damaged entry raises in zipfile, tarfile and their decompressors.
READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    NotImplementedError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold. Past any of these it is refused as a probable ZIP or tar bomb.

    The defaults admit a VOC dataset of ~250,000 images (two entries each) up to 64 GiB, and refuse the
    classic bombs (a single deflate stream reaches ~1000:1; overlapping-entry bombs reach terabytes).

    Attributes:
        max_entries: entries in the central directory (folders and skipped litter included).
        max_total_bytes: uncompressed bytes of all entries together.
        max_entry_bytes: uncompressed bytes of one entry (no image or XML comes near 4 GiB).
        max_ratio: uncompressed / compressed size of one entry; real images are ~1:1, XML ~5:1. A blank
            uncompressed BMP can exceed it: raise the limit (`visapp ingest --max-ratio`) for such data.
        ratio_min_bytes: entries smaller than this are not held to `max_ratio` (a tiny XML of spaces compresses
            200:1 and is harmless; the total size limit still bounds them).
    """

    max_entries: int = 500_000
    max_total_bytes: int = 64 * GIB
    max_entry_bytes: int = 4 * GIB
    max_ratio: float = 100.0
    ratio_min_bytes: int = 1 * MIB

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_total_bytes", "max_entry_bytes", "max_ratio"):
            value = getattr(self, name)
            if not value > 0:
                option = "--" + name.replace("_", "-").replace("-bytes", "-size")
                raise VisError(f"the archive limit {name} must be above 0, not {value!r} ({option})")


class ArchiveRefused(VisError):
    """An archive we will not extract. `code` says why (see the module docstring), the message says how to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Entry:
    """One accepted entry: its safe relative POSIX path (NFC), its name as stored, sizes, and its record."""

    path: str
    name: str
    size: int
    is_dir: bool
    record: Any  # the reader's own record of it (zipfile.ZipInfo, tarfile.TarInfo)
    compressed: int | None = None  # its compressed size, when the format records one per entry


@dataclass
class ExtractSummary:
    """What `extract` wrote."""

    files: int = 0
    bytes: int = 0
    folders: int = 0
    skipped: list[str] = field(default_factory=list)  # entries outside the prefix or litter, not written


def parse_size(text: str) -> int:
    """'64G', '500M', '1024' -> bytes (binary units: K = 1024)."""
    units = {"K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}
    clean = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if clean and clean[-1] in units:
            return int(float(clean[:-1]) * units[clean[-1]])
        return int(clean)
    except ValueError:
        raise VisError(f"{text!r} is not a size; write e.g. 500M, 64G or a number of bytes") from None


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def safe_relpath(name: str) -> str:
    """An archive or folder entry name -> a relative POSIX path that stays inside the destination (NFC).

    Raises:
        ArchiveRefused: `unsafe_path` for absolute paths, drive letters, `..`, control characters.
    """
    posix = name.replace("\\", "/")
    if _has_control(posix.removesuffix(ICON_FILE) if posix.rpartition("/")[2] == ICON_FILE else posix):
        raise ArchiveRefused("unsafe_path", f"entry {name!r} has a control character in its name")
    if posix.startswith("/") or (len(posix) >= 2 and posix[1] == ":" and posix[0].isalpha()):
        raise ArchiveRefused("unsafe_path", f"entry {name!r} has an absolute path; archive entries must be relative")
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(
            "unsafe_path", f"entry {name!r} has a '..' component that points outside the archive folder"
        )
    return unicodedata.normalize("NFC", "/".join(parts))


def litter_kind(path: str) -> str | None:
    """What kind of operating system litter a relative POSIX path is (`'.DS_Store'`, `'__MACOSX/'`, ...), or None.

    A path is litter when a folder on it is a litter folder (`__MACOSX/`, `.Spotlight-V100/`, `.Trashes/`, ...),
    or when its last part is a litter file (`.DS_Store`, `Thumbs.db`, `Icon\\r`, ...) or an AppleDouble `._*`.
    """
    parts = path.split("/")
    for part in parts:  # the last one too: a folder entry, or a file that stands where the folder would
        folded = part.casefold()
        if folded in LITTER_DIRS:
            return LITTER_DIRS[folded]
        if LINUX_TRASH.fullmatch(folded):
            return ".Trash-<uid>/"
    name = parts[-1]
    if name.startswith(APPLE_DOUBLE) and len(name) > len(APPLE_DOUBLE):
        return APPLE_DOUBLE_KIND
    if name == ICON_FILE:
        return ICON_KIND
    return LITTER_FILES.get(name.casefold())


def is_litter(path: str) -> bool:
    """Operating system litter (see `litter_kind`): never data, skipped unread by every source."""
    return litter_kind(path) is not None


def shown_path(path: str) -> str:
    """A path for a message: control characters escaped (`Icon\\r`), undecodable bytes replaced."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def fold(path: str) -> str:
    """The key under which two names are the same file on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFC", path).casefold()


def _clash(first: str, second: str) -> str:
    if first == second:
        return f"entry {first!r} appears twice"
    if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", second):
        return f"entries {first!r} and {second!r} are the same name in two Unicode forms (NFC/NFD)"
    return f"entries {first!r} and {second!r} differ only in letter case"


def check_collisions(paths: list[tuple[str, bool, str]], origin: str) -> None:
    """Refuse names that are the same file somewhere: repeats, case or Unicode variants, a file used as a folder.

    Linux would keep `a.jpg` and `A.jpg` apart, but Windows and macOS (and so a colleague's checkout) would not.

    Args:
        paths: (safe relative path, is_dir, name as written in the source) triples.
        origin: what the paths come from, for the message.
    """
    files: dict[str, tuple[str, str]] = {}
    folders: dict[str, str] = {}  # folded folder path -> a path that makes it a folder
    for path, is_dir, original in paths:
        key = fold(path)
        if is_dir:
            folders.setdefault(key, path)
            continue
        if key in files:
            raise ArchiveRefused(
                "duplicate",
                f"{origin}: {_clash(files[key][1], original)}: they would overwrite each other; "
                "rename one and re-create the archive",
            )
        files[key] = (path, original)
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), path)
    for key, (path, _) in files.items():
        if key in folders:
            raise ArchiveRefused(
                "duplicate",
                f"{origin}: {path!r} is a file, but {folders[key]!r} needs it to be a folder; rename one",
            )


class SafeArchive:
    """An archive opened for checked extraction; use as a context manager.

    Opening vets every entry (names, types, declared sizes); `entries` are the accepted ones, litter left out.
    `extract` streams them into a new folder. The ZIP and tar readers add what their format needs.
    """

    kind = "archive"

    def __init__(self, path: str | Path, limits: ArchiveLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or ArchiveLimits()
        self.origin = str(path)
        self.entries: list[Entry] = []
        self.litter: list[str] = []  # the files left out as operating system litter (`is_litter`)
        self.total_bytes = 0

    def __enter__(self) -> SafeArchive:
        self._open()
        try:
            self._vet()
            check_collisions([(e.path, e.is_dir, e.name) for e in self.entries], self.origin)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What a reader provides.
    def _open(self) -> None:
        raise NotImplementedError

    def _vet(self) -> None:
        raise NotImplementedError

    def _stream(self, entry: Entry) -> IO[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        """Close the archive's file."""
        raise NotImplementedError

    @property
    def files(self) -> list[str]:
        """Relative paths of the regular files that `extract` would write."""
        return [entry.path for entry in self.entries if not entry.is_dir]

    def _refuse(self, code: str, message: str) -> ArchiveRefused:
        return ArchiveRefused(code, f"{self.origin}: {message}")

    def _too_many(self, count: int, verb: str = "holds") -> ArchiveRefused:
        return self._refuse(
            "too_many_entries",
            f"{verb} {count:,} entries, more than the limit of {self.limits.max_entries:,} "
            f"(a {self.kind} bomb?); split the archive, or raise the limit (--max-entries) if it is genuine",
        )

    def _safe_path(self, name: str) -> str:
        try:
            return safe_relpath(name)
        except ArchiveRefused as exc:
            raise self._refuse(exc.code, str(exc)) from None

    def _skip_litter(self, path: str, is_dir: bool) -> bool:
        """Whether the entry at the safe `path` is operating system litter: then it is left out unread (files
        are counted in `litter`), whatever its type, flags or size."""
        if not path or not is_litter(path):
            return False
        if not is_dir:
            self.litter.append(path)
        return True

    def _admit(self, path: str, name: str, size: int, is_dir: bool, record: Any, compressed: int | None) -> None:
        """Keep a vetted entry (litter aside), counting its declared size against the limits."""
        if not path:
            return  # "./" or "/": the archive's root folder itself
        if self._skip_litter(path, is_dir):
            return
        if not is_dir:
            self._check_size(name, size, compressed)
            self.total_bytes += size
            if self.total_bytes > self.limits.max_total_bytes:
                raise self._refuse(
                    "too_large",
                    f"its entries add up to more than {self.limits.max_total_bytes:,} bytes uncompressed "
                    f"(a {self.kind} bomb?); raise the limit (--max-total-size) if the dataset is genuinely this large",
                )
        self.entries.append(Entry(path, name, size, is_dir, record, compressed))

    def _check_size(self, name: str, size: int, compressed: int | None) -> None:
        limits = self.limits
        if size > limits.max_entry_bytes:
            raise self._refuse(
                "too_large",
                f"entry {name!r} is {size:,} bytes uncompressed, more than the per-file limit of "
                f"{limits.max_entry_bytes:,} (a {self.kind} bomb?)",
            )
        if compressed is not None and size >= limits.ratio_min_bytes and size > limits.max_ratio * max(compressed, 1):
            raise self._refuse(
                "ratio",
                f"entry {name!r} expands {size / max(compressed, 1):,.0f}-fold ({compressed:,} -> {size:,} bytes), "
                f"more than the limit of {limits.max_ratio:g} (a {self.kind} bomb?); raise it (--max-ratio) if the "
                "file is genuine (e.g. an uncompressed blank image)",
            )

    def _check_written(self, name: str, written: int, total: int, compressed: int | None) -> None:
        """The limits on the bytes actually written: a header that lies about sizes cannot get past them."""
        if total > self.limits.max_total_bytes:
            raise self._refuse(
                "too_large",
                f"extracting entry {name!r} passed the limit of {self.limits.max_total_bytes:,} bytes in total "
                f"(a {self.kind} bomb?)",
            )
        self._check_size(name, written, compressed)

    def extract(self, dest: str | Path, prefix: str = "", progress: ProgressCallback | None = None) -> ExtractSummary:
        """Stream the accepted entries under `prefix` into `dest` (created; must not exist), prefix stripped.

        On any failure `dest` is removed. The limits are enforced on the bytes actually written.

        Raises:
            ArchiveRefused: `corrupt` (CRC error, bad data), `too_large`, `ratio`.
            VisError: `dest` exists or cannot be written (no space, permission, read-only).
        """
        dest = Path(dest)
        try:
            dest.mkdir(parents=True)
        except FileExistsError:
            raise VisError(f"cannot extract into {dest}: it already exists") from None
        except OSError as exc:
            raise os_error(exc, dest, "create") from None
        try:
            return self._extract_into(dest, prefix.strip("/"), progress)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _extract_into(self, dest: Path, prefix: str, progress: ProgressCallback | None) -> ExtractSummary:
        summary = ExtractSummary(skipped=list(self.litter))
        total = 0
        wanted = [e for e in self.entries if not e.is_dir and (not prefix or e.path.startswith(prefix + "/"))]
        counter = Counter(progress, "ingest", len(wanted), "files")
        for entry in self.entries:
            if prefix and not entry.path.startswith(prefix + "/"):
                summary.skipped.append(entry.path)
                continue
            target = dest / entry.path[len(prefix) + 1 :] if prefix else dest / entry.path
            if entry.is_dir:
                _mkdir(target)
                summary.folders += 1
                continue
            _mkdir(target.parent)
            written = self._copy_entry(entry, target, total)
            total += written
            counter.advance()
            summary.files += 1
            summary.bytes += written
        return summary

    def _copy_entry(self, entry: Entry, target: Path, total_before: int) -> int:
        """Copy one entry in CHUNK pieces, counting the bytes against the limits."""
        written = 0
        src = self._read_guard(entry, lambda: self._stream(entry))
        with src, _create(target) as dst:
            while True:
                chunk = self._read_guard(entry, lambda: src.read(CHUNK))
                if not chunk:
                    break
                written += len(chunk)
                self._check_written(entry.path, written, total_before + written, entry.compressed)
                try:
                    dst.write(chunk)
                except OSError as exc:
                    raise os_error(exc, target) from None
        return written

    def _read_guard(self, entry: Entry, read: Any) -> Any:
        try:
            return read()
        except READ_ERRORS as exc:
            raise self._refuse(
                "corrupt", f"entry {entry.path!r} cannot be read ({exc}); the archive is damaged"
            ) from None


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, folder, "create") from None


@contextlib.contextmanager
def _create(target: Path) -> Iterator[IO[bytes]]:
    try:
        handle = target.open("xb")  # exclusive: never overwrite, never follow a planted link
    except OSError as exc:
        raise os_error(exc, target) from None
    try:
        yield handle
    finally:
        try:
            handle.close()
        except OSError as exc:
            raise os_error(exc, target) from None


def archive_kind(path: Path) -> str | None:
    """ "zip" or "tar" from a file's first bytes (a compressed stream is taken for a tar), or None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_COMPRESSED_MAGIC) or head[257:262] == b"ustar":
        return "tar"
    return None


def open_archive(path: str | Path, limits: ArchiveLimits | None = None) -> SafeArchive:
    """The archive at `path`, vetted (enter the returned object to open it), by what its bytes say it is."""
    from visapp.ingest.tar_archive import SafeTar
    from visapp.ingest.zip_archive import SafeZip

    path = Path(path)
    if not path.is_file():
        raise VisError(f"{path}: no such file; give the path of an archive or of a folder")
    kind = archive_kind(path)
    if kind == "tar":
        return SafeTar(path, limits)
    if kind == "zip" or path.suffix.lower() == ".zip":
        return SafeZip(path, limits)
    raise ArchiveRefused("not_archive", f"{path}: not {ARCHIVE_KINDS}; re-create or re-download it")


def extract_archive(path: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> ExtractSummary:
    """Check the archive at `path` and extract all of it into the new folder `dest` (removed again on failure)."""
    with open_archive(path, limits) as archive:
        return archive.extract(dest)
