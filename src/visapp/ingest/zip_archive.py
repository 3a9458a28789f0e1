"""ZIP archives: the names, types and flags of their entries, read for `visapp.ingest.archive`'s checks."""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO

from visapp.ingest.archive import ArchiveLimits, ArchiveRefused, Entry, SafeArchive
from visapp.integrations.zipfile import compression_name, declared_entries

_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP Unicode Path: UTF-8 name of an entry whose header name is legacy
_READABLE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})


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
    raise ArchiveRefused(
        "legacy_encoding",
        f"{origin}: entry {info.filename!r} has a non-ASCII name in a legacy encoding (no UTF-8 flag), which "
        "cannot be decoded reliably; re-create the archive with UTF-8 names (7-Zip: `7z a -tzip -mcu=on`, "
        "Info-ZIP zip 3.0 under a UTF-8 locale, or Python's zipfile) or rename the files to ASCII",
    )


def _file_type(info: zipfile.ZipInfo) -> int:
    # Only Unix-made archives (create_system 3) keep a file mode in the high 16 bits of external_attr.
    return stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0


class SafeZip(SafeArchive):
    """A ZIP archive opened for checked extraction (see `SafeArchive`)."""

    kind = "ZIP"

    def __init__(self, path: str | Path, limits: ArchiveLimits | None = None) -> None:
        super().__init__(path, limits)
        self._zip: zipfile.ZipFile | None = None

    def close(self) -> None:
        """Close the ZIP file."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _open(self) -> None:
        declared = declared_entries(self.path)
        if declared is not None and declared > self.limits.max_entries:
            raise self._too_many(declared, "declares")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            code = "not_archive" if "not a zip file" in str(exc).lower() else "corrupt"
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
        if len(infos) > self.limits.max_entries:
            raise self._too_many(len(infos))
        for info in infos:
            self._vet_entry(info)

    def _vet_entry(self, info: zipfile.ZipInfo) -> None:
        name = _entry_name(info, self.origin)
        path = self._safe_path(name)
        kind = _file_type(info)
        if self._skip_litter(path, info.is_dir() or kind == stat.S_IFDIR):
            return
        if kind == stat.S_IFLNK:
            raise self._refuse(
                "symlink", f"entry {name!r} is a symbolic link; archive the files themselves, not links to them"
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise self._refuse("symlink", f"entry {name!r} is a special file (FIFO, device or socket), not a file")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise self._refuse("encrypted", f"entry {name!r} is encrypted; re-create the archive without a password")
        if info.compress_type not in _READABLE_METHODS:
            method = compression_name(info.compress_type)
            raise self._refuse(
                "unsupported",
                f"entry {name!r} uses the compression method {method!r}, which cannot be read here; "
                "re-create the archive with the standard 'deflate' method (e.g. `zip -r` or 7-Zip's -mm=Deflate)",
            )
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        self._admit(path, name, info.file_size, is_dir, info, info.compress_size)

    def _stream(self, entry: Entry) -> IO[bytes]:
        assert self._zip is not None, "use SafeZip as a context manager"
        return self._zip.open(entry.record)
