"""manifest.jsonl <-> rows: the accepted samples, one JSON object a line, sorted by image path.

validate writes it; convert and metadata stream it (memory does not grow with the number of rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.fsio import atomic_path

REQUIRED_KEYS = ("id", "image", "sha256", "width", "height", "objects")


def write_rows(manifest_path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically, one `json.dumps(row, sort_keys=True)` a line."""
    with atomic_path(manifest_path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def read_rows(manifest_path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream (line number, row); a missing file or a row without the required keys is a `VisError`."""
    if not manifest_path.is_file():
        raise VisError(f"{manifest_path} not found: run the validate stage first (`dvc repro validate`)")
    with manifest_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                missing = [key for key in REQUIRED_KEYS if key not in row]
            except (ValueError, TypeError) as exc:
                raise VisError(
                    f"{manifest_path}:{number}: not a manifest row ({exc}); rerun the validate stage"
                ) from None
            if missing:
                raise VisError(f"{manifest_path}:{number}: manifest row without {missing}; rerun the validate stage")
            yield number, row
