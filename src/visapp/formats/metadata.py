"""dataset_metadata.json, read back: what training and the registry take from the metadata stage's output.

The metadata stage (`visapp.dataset.statistics`) writes it; its `fingerprint` names the dataset a model was
trained on, and its `raw_dvc_hash` the DVC version of `data/raw` it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visapp.errors import VisError

METADATA_FILE = "dataset_metadata.json"


def read_metadata(path: Path) -> dict[str, Any]:
    """A dataset_metadata.json with a fingerprint; `VisError` naming the stage to rerun otherwise."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisError(f"{path} not found: run the metadata stage first (`dvc repro metadata`)") from None
    except (OSError, ValueError) as exc:
        raise VisError(
            f"{path} is not readable JSON ({exc}): rerun the metadata stage (`dvc repro -f metadata`)"
        ) from None
    if not isinstance(metadata, dict) or not metadata.get("fingerprint"):
        raise VisError(f"{path} has no dataset fingerprint: rerun the metadata stage (`dvc repro -f metadata`)")
    return metadata
