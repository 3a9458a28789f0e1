"""`<folder>.dvc` files (what `dvc add` writes) -> the hash, size and description DVC recorded for the folder.

A .dvc file is small YAML with a stable schema (`outs: [{md5, size, nfiles, hash, path, desc}]`). Reading it
here, rather than through DVC, keeps the data stages free of DVC's import (seconds) and of its internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.errors import VisError


@dataclass(frozen=True)
class DvcOut:
    """One output of a .dvc file: `md5` is e.g. "3f2a...dir" for a folder, as DVC writes it."""

    path: str
    md5: str
    size: int = 0
    nfiles: int = 0
    desc: str | None = None


def dvc_file_for(folder: Path) -> Path:
    """`data/raw` -> `data/raw.dvc` (through `..` and symlinks as written, not resolved)."""
    folder = Path(os.path.normpath(Path(folder).absolute()))
    return folder.with_name(folder.name + ".dvc")


def parse_dvc_file(text: str, origin: str, name: str | None = None) -> DvcOut:
    """The output named `name` (else the first) of a .dvc file's text; `VisError` when it is not one."""
    import yaml

    try:
        data: Any = yaml.safe_load(text)
        outs = data["outs"]
        out = next((o for o in outs if name and Path(str(o.get("path", ""))).name == name), outs[0])
        md5 = out["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError):
        raise VisError(f"{origin} is not a file `dvc add` wrote: run `dvc add` on its folder again") from None
    if not isinstance(md5, str) or not md5:
        raise VisError(f"{origin} records no md5: run `dvc add` on its folder again")
    return DvcOut(
        path=str(out.get("path", "")),
        md5=md5,
        size=int(out.get("size") or 0),
        nfiles=int(out.get("nfiles") or 0),
        desc=out.get("desc"),
    )


def read_dvc_out(folder: Path) -> DvcOut | None:
    """What `<folder>.dvc` records for `folder`, or None when the folder is not tracked by a .dvc file."""
    dvc_file = dvc_file_for(folder)
    try:
        text = dvc_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VisError(f"cannot read {dvc_file} ({exc.strerror}): check its permissions") from None
    return parse_dvc_file(text, str(dvc_file), dvc_file.name.removesuffix(".dvc"))


SOURCE_FILE = "source.json"  # beside validate's report: which version of data/raw it read


def source_record(raw_dir: Path) -> dict[str, str | None]:
    """What validate records of the raw folder it read: DVC's hash of it (from its .dvc file), or None."""
    found = read_dvc_out(raw_dir)
    return {"raw_dvc_hash": found.md5 if found else None}
