"""tar archives (plain, or compressed with gzip, bzip2 or xz): their members, read for `visapp.ingest.archive`.

Public VOC releases ship as tar. A tar records no compressed size per member, so the compression ratio is held
to the limit for the archive as a whole (what it expands to, against its size on disk). A member's name must
be valid UTF-8 (tarfile hands other bytes over as surrogates), and links of either kind are refused.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from visapp.ingest.archive import READ_ERRORS, ArchiveLimits, Entry, SafeArchive


def _damaged_stream(path: Path) -> bool:
    """Whether the file is a compressed stream that fails to decompress (rather than one that holds no tar)."""
    with path.open("rb") as handle:
        head = handle.read(2)
    openers: dict[bytes, Callable[[Path], io.BufferedIOBase]] = {
        b"\x1f\x8b": gzip.open,
        b"BZ": bz2.open,
        b"\xfd7": lzma.open,
    }
    opener = openers.get(head)
    if opener is None:
        return False
    try:
        with opener(path) as stream:  # each opens for reading bytes by default
            while stream.read(1 << 20):
                pass
    except READ_ERRORS:
        return True
    return False


class SafeTar(SafeArchive):
    """A tar archive opened for checked extraction (see `SafeArchive`)."""

    kind = "tar"

    def __init__(self, path: str | Path, limits: ArchiveLimits | None = None) -> None:
        super().__init__(path, limits)
        self._tar: tarfile.TarFile | None = None
        self._size_on_disk = 0

    def close(self) -> None:
        """Close the tar file."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def _open(self) -> None:
        self._size_on_disk = self.path.stat().st_size
        try:
            self._tar = tarfile.open(self.path, mode="r:*")  # noqa: SIM115 (closed by close())
        except READ_ERRORS as exc:
            if _damaged_stream(self.path):
                raise self._refuse("corrupt", "the compressed data is damaged; re-create or re-download it") from None
            raise self._refuse(
                "not_archive", f"not a readable tar archive ({exc}); re-create or re-download it"
            ) from None

    def _vet(self) -> None:
        assert self._tar is not None
        count = 0
        try:
            for member in self._tar:  # streamed: a tar bomb of headers stops at the limit
                count += 1
                if count > self.limits.max_entries:
                    raise self._too_many(count, "holds at least")
                self._vet_member(member)
        except READ_ERRORS as exc:
            raise self._refuse(
                "corrupt", f"cannot be read past entry {count} ({exc}); the archive is damaged"
            ) from None
        self._check_archive_ratio(self.total_bytes)

    def _vet_member(self, member: tarfile.TarInfo) -> None:
        name = member.name
        if any("\udc80" <= ch <= "\udcff" for ch in name):
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise self._refuse(
                "legacy_encoding",
                f"entry {shown!r} has a name that is not UTF-8 (a legacy code page), which cannot be decoded "
                "reliably; re-create the archive with UTF-8 names, or rename the files to ASCII",
            )
        path = self._safe_path(name)
        if self._skip_litter(path, member.isdir()):
            return
        if member.issym() or member.islnk():
            raise self._refuse("symlink", f"entry {name!r} is a link; archive the files themselves, not links to them")
        if not (member.isfile() or member.isdir()):
            raise self._refuse("symlink", f"entry {name!r} is a special file (FIFO, device or socket), not a file")
        self._admit(path, name, member.size, member.isdir(), member, None)

    def _check_archive_ratio(self, total: int) -> None:
        limits = self.limits
        if total >= limits.ratio_min_bytes and total > limits.max_ratio * max(self._size_on_disk, 1):
            raise self._refuse(
                "ratio",
                f"expands {total / max(self._size_on_disk, 1):,.0f}-fold ({self._size_on_disk:,} -> {total:,} bytes), "
                f"more than the limit of {limits.max_ratio:g} (a tar bomb?); raise it (--max-ratio) if the data is "
                "genuine",
            )

    def _check_written(self, name: str, written: int, total: int, compressed: int | None) -> None:
        super()._check_written(name, written, total, compressed)
        self._check_archive_ratio(total)

    def _stream(self, entry: Entry) -> IO[bytes]:
        assert self._tar is not None, "use SafeTar as a context manager"
        stream = self._tar.extractfile(entry.record)
        if stream is None:
            raise OSError("not a regular file")
        return stream
