"""zipfile's private and undocumented parts: the entry count a ZIP declares, read before `ZipFile` loads its
whole directory, and the names of compression methods."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def declared_entries(path: Path) -> int | None:
    """The entry count the end-of-central-directory record declares, or None when it cannot be read.

    A cheap guard before `ZipFile` loads every entry into memory (a ZIP bomb can declare millions);
    `_EndRecData` has been stable since Python 2.
    """
    try:
        with path.open("rb") as fp:
            end = zipfile._EndRecData(fp)  # type: ignore[attr-defined]  # private: typeshed leaves it out
    except (AttributeError, OSError, struct.error):
        return None
    return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]  # as above


def compression_name(method: int) -> str:
    """The name of a ZIP compression method (`deflate64`, `ppmd`), or `method N` for one zipfile does not name."""
    names: dict[int, str] = zipfile.compressor_names  # type: ignore[attr-defined]  # undocumented: not in typeshed
    return names.get(method, f"method {method}")
