"""ZIP archive -> a vetted list of entries, and a bounded, streaming extraction of them into a fresh folder.

Every entry is checked before the first byte is written, and the whole archive is refused when one entry
is bad (a half-extracted dataset is worse than none). Refused, each with its own `ZipRefused.code`:

| code | what |
| --- | --- |
| `not_zip`, `corrupt` | not a ZIP, a damaged central directory, a CRC error or undecodable data |
| `unsafe_path` | an absolute path (`/x`, `C:\\x`, `\\\\server\\share`), a `..` component, a control character |
| `symlink` | a symbolic link (or another special file: FIFO, device, socket) |
| `encrypted` | an encrypted entry (flag bit 0x1): we cannot read it, and will not ask for a password |
| `unsupported` | a compression method Python cannot read (e.g. Deflate64, which Windows' Explorer writes for >2 GB) |
| `legacy_encoding` | a non-ASCII name stored in a legacy code page (no UTF-8 flag 0x800 and no Info-ZIP Unicode Path |
|   | extra field): its bytes could mean anything (cp437, cp1252, cp866, Shift-JIS...), so we do not guess |
| `duplicate` | the same name twice, names equal after case folding or Unicode normalisation, a file that is also |
|   | used as a folder |
| `too_many_entries`, `too_large`, `ratio` | past `ZipLimits` (a ZIP bomb): checked on the declared sizes first, |
|   | then on the bytes actually written, as a lying header cannot be trusted |

Accepted and normalised: backslashes are path separators (Windows PowerShell 5's Compress-Archive writes
them), names are stored as Unicode NFC, directory entries only create folders, and `__MACOSX/`,
`.DS_Store`, `Thumbs.db` and `desktop.ini` (operating system litter, not data) are skipped.

Nothing is written outside the destination folder, and on any failure that folder is removed.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from visapp.errors import VisError
from visapp.fsio import os_error
from visapp.integrations.zipfile import declared_entries
from visapp.progress import Counter, ProgressCallback

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
CHUNK = 1 * MIB  # read/write unit: memory per entry stays at this, whatever the entry's size

JUNK_DIRS = frozenset({"__macosx"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP Unicode Path: UTF-8 name of an entry whose header name is legacy
_READABLE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# Errors that reading a damaged entry raises in zipfile and its decompressors.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class ZipLimits:
    """What an archive may hold. Past any of these it is refused as a probable ZIP bomb.

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


class ZipRefused(VisError):
    """An archive we will not extract. `code` says why (see the module docstring), the message says how to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Entry:
    """One accepted entry: its safe relative POSIX path (NFC), its name as stored, and its zipfile record."""

    path: str
    name: str
    info: zipfile.ZipInfo
    is_dir: bool


@dataclass
class ExtractSummary:
    """What `SafeZip.extract` wrote."""

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
        ZipRefused: `unsafe_path` for absolute paths, drive letters, `..`, control characters.
    """
    posix = name.replace("\\", "/")
    if _has_control(posix):
        raise ZipRefused("unsafe_path", f"entry {name!r} has a control character in its name")
    if posix.startswith("/") or (len(posix) >= 2 and posix[1] == ":" and posix[0].isalpha()):
        raise ZipRefused("unsafe_path", f"entry {name!r} has an absolute path; archive entries must be relative")
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ZipRefused("unsafe_path", f"entry {name!r} has a '..' component that points outside the archive folder")
    return unicodedata.normalize("NFC", "/".join(parts))


def is_litter(path: str) -> bool:
    """Operating system litter (`__MACOSX/`, `.DS_Store`, `Thumbs.db`, `desktop.ini`) that is never data."""
    parts = path.casefold().split("/")
    return any(part in JUNK_DIRS for part in parts[:-1]) or parts[-1] in JUNK_FILES or parts[0] in JUNK_DIRS


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
            raise ZipRefused(
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
            raise ZipRefused(
                "duplicate",
                f"{origin}: {path!r} is a file, but {folders[key]!r} needs it to be a folder; rename one",
            )


def _unicode_path(info: zipfile.ZipInfo) -> str | None:
    """The UTF-8 name from an Info-ZIP Unicode Path extra field, when it matches the header name's CRC."""
    extra, pos = info.extra, 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        data = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag == _UNICODE_PATH_EXTRA and len(data) >= 5 and data[0] == 1:
            (crc,) = struct.unpack_from("<I", data, 1)
            # zipfile decoded the header name as cp437 (a full byte mapping), so this gives back its bytes.
            if zlib.crc32(info.orig_filename.encode("cp437")) == crc:
                try:
                    return data[5:].decode("utf-8")
                except UnicodeDecodeError:
                    return None
    return None


def _entry_name(info: zipfile.ZipInfo, origin: str) -> str:
    if info.flag_bits & _UTF8_FLAG or info.orig_filename.isascii():
        return info.filename
    name = _unicode_path(info)
    if name is not None:
        return name
    raise ZipRefused(
        "legacy_encoding",
        f"{origin}: entry {info.filename!r} has a non-ASCII name in a legacy encoding (no UTF-8 flag), which "
        "cannot be decoded reliably; re-create the archive with UTF-8 names (7-Zip: `7z a -tzip -mcu=on`, "
        "Info-ZIP zip 3.0 under a UTF-8 locale, or Python's zipfile) or rename the files to ASCII",
    )


def _file_type(info: zipfile.ZipInfo) -> int:
    # Only Unix-made archives (create_system 3) keep a file mode in the high 16 bits of external_attr.
    return stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0


class SafeZip:
    """A ZIP archive opened for checked extraction. Use as a context manager.

    Opening vets every entry (names, types, flags, declared sizes); `entries` are the accepted ones,
    litter left out. `extract` streams them into a new folder.
    """

    def __init__(self, path: str | Path, limits: ZipLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or ZipLimits()
        self.origin = str(path)
        self.entries: list[Entry] = []
        self.litter: list[str] = []
        self.total_bytes = 0
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> SafeZip:
        self._open()
        try:
            self._vet()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    @property
    def files(self) -> list[str]:
        """Relative paths of the regular files that `extract` would write."""
        return [entry.path for entry in self.entries if not entry.is_dir]

    def _refuse(self, code: str, message: str) -> ZipRefused:
        return ZipRefused(code, f"{self.origin}: {message}")

    def _open(self) -> None:
        if not self.path.is_file():
            raise VisError(f"{self.origin}: no such file; give the path of a .zip archive or of a folder")
        declared = declared_entries(self.path)
        if declared is not None and declared > self.limits.max_entries:
            raise self._refuse(
                "too_many_entries",
                f"declares {declared:,} entries, more than the limit of {self.limits.max_entries:,} "
                "(a ZIP bomb?); split the archive, or raise the limit (--max-entries) if it is genuine",
            )
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            code = "not_zip" if "not a zip file" in str(exc).lower() else "corrupt"
            raise self._refuse(code, f"not a readable ZIP archive ({exc}); re-create or re-download it") from None
        except UnicodeDecodeError:
            raise self._refuse(
                "corrupt", "an entry is flagged as UTF-8 but its name is not valid UTF-8; re-create the archive"
            ) from None
        except (OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise self._refuse("corrupt", f"not a readable ZIP archive ({exc}); re-create or re-download it") from None

    def _vet(self) -> None:
        assert self._zip is not None
        infos = self._zip.infolist()
        limits = self.limits
        if len(infos) > limits.max_entries:
            raise self._refuse(
                "too_many_entries",
                f"holds {len(infos):,} entries, more than the limit of {limits.max_entries:,} "
                "(a ZIP bomb?); split the archive, or raise the limit (--max-entries) if it is genuine",
            )
        for info in infos:
            self._vet_entry(info)
        check_collisions([(e.path, e.is_dir, e.name) for e in self.entries], self.origin)

    def _vet_entry(self, info: zipfile.ZipInfo) -> None:
        limits = self.limits
        name = _entry_name(info, self.origin)
        try:
            path = safe_relpath(name)
        except ZipRefused as exc:
            raise self._refuse(exc.code, str(exc)) from None
        kind = _file_type(info)
        if kind == stat.S_IFLNK:
            raise self._refuse(
                "symlink", f"entry {name!r} is a symbolic link; archive the files themselves, not links to them"
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise self._refuse("symlink", f"entry {name!r} is a special file (FIFO, device or socket), not a file")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise self._refuse("encrypted", f"entry {name!r} is encrypted; re-create the archive without a password")
        if info.compress_type not in _READABLE_METHODS:
            method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
            raise self._refuse(
                "unsupported",
                f"entry {name!r} uses the compression method {method!r}, which cannot be read here; "
                "re-create the archive with the standard 'deflate' method (e.g. `zip -r` or 7-Zip's -mm=Deflate)",
            )
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        if not path:
            return  # "./" or "/": the archive's root folder itself
        if is_litter(path):
            self.litter.append(path)
            return
        if not is_dir:
            self._check_size(name, info.file_size, info.compress_size)
            self.total_bytes += info.file_size
            if self.total_bytes > limits.max_total_bytes:
                raise self._refuse(
                    "too_large",
                    f"its entries add up to more than {limits.max_total_bytes:,} bytes uncompressed "
                    "(a ZIP bomb?); raise the limit (--max-total-size) if the dataset is genuinely this large",
                )
        self.entries.append(Entry(path, name, info, is_dir))

    def _check_size(self, name: str, size: int, compressed: int) -> None:
        limits = self.limits
        if size > limits.max_entry_bytes:
            raise self._refuse(
                "too_large",
                f"entry {name!r} is {size:,} bytes uncompressed, more than the per-file limit of "
                f"{limits.max_entry_bytes:,} (a ZIP bomb?)",
            )
        if size >= limits.ratio_min_bytes and size > limits.max_ratio * max(compressed, 1):
            raise self._refuse(
                "ratio",
                f"entry {name!r} expands {size / max(compressed, 1):,.0f}-fold ({compressed:,} -> {size:,} bytes), "
                f"more than the limit of {limits.max_ratio:g} (a ZIP bomb?); raise it (--max-ratio) if the file "
                "is genuine (e.g. an uncompressed blank image)",
            )

    def extract(self, dest: str | Path, prefix: str = "", progress: ProgressCallback | None = None) -> ExtractSummary:
        """Stream the accepted entries under `prefix` into `dest` (created; must not exist), prefix stripped.

        On any failure `dest` is removed. The limits are enforced on the bytes actually written.

        Raises:
            ZipRefused: `corrupt` (CRC error, bad data), `too_large`, `ratio`.
            VisError: `dest` exists or cannot be written (no space, permission, read-only).
        """
        assert self._zip is not None, "use SafeZip as a context manager"
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
                self._mkdir(target)
                summary.folders += 1
                continue
            self._mkdir(target.parent)
            written = self._copy_entry(entry, target, total)
            total += written
            counter.advance()
            summary.files += 1
            summary.bytes += written
        return summary

    def _mkdir(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, folder, "create") from None

    def _copy_entry(self, entry: Entry, target: Path, total_before: int) -> int:
        """Copy one entry in CHUNK pieces, counting the bytes: a header that lies about sizes cannot bypass limits."""
        assert self._zip is not None
        limits, name, written = self.limits, entry.path, 0
        try:
            src = self._zip.open(entry.info)
        except _READ_ERRORS as exc:
            raise self._refuse("corrupt", f"entry {name!r} cannot be read ({exc}); the archive is damaged") from None
        with src, self._create(target) as dst:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except _READ_ERRORS as exc:
                    raise self._refuse(
                        "corrupt", f"entry {name!r} cannot be read ({exc}); the archive is damaged"
                    ) from None
                if not chunk:
                    break
                written += len(chunk)
                if total_before + written > limits.max_total_bytes:
                    raise self._refuse(
                        "too_large",
                        f"extracting entry {name!r} passed the limit of {limits.max_total_bytes:,} bytes in total "
                        "(a ZIP bomb?)",
                    )
                self._check_size(name, written, entry.info.compress_size)
                try:
                    dst.write(chunk)
                except OSError as exc:
                    raise os_error(exc, target) from None
        return written

    @staticmethod
    @contextlib.contextmanager
    def _create(target: Path) -> Iterator:
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


def extract_zip(zip_path: str | Path, dest: str | Path, limits: ZipLimits | None = None) -> ExtractSummary:
    """Check `zip_path` and extract all of it into the new folder `dest` (removed again on failure)."""
    with SafeZip(zip_path, limits) as archive:
        return archive.extract(dest)
