"""The promoted model the service serves: `VISAPP_MODEL_VERSION`, fetched from the DVC remote when it starts.

A promotion (`yolo#prod#N`) rolls the service out with the promoted version in `VISAPP_MODEL_VERSION`; the service
fetches that version's weights once, at start, through the registry (`dvc artifacts get`: the DVC cache, else the
remote), reports the version in `/health` and serves the weights at `/models/prod/download`. A version it cannot
fetch stops the start with the reason: the rollout's health check then sees no healthy service and rolls back.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from pydantic import BaseModel

from visapp.errors import VisError
from visapp.service import records
from visapp.service.scratch import CACHE
from visapp.service.settings import ServiceSettings

log = logging.getLogger(__name__)


class ServedModel(BaseModel):
    """The promoted model the service serves: its version, the weights' SHA-256, and when they were loaded."""

    version: str  # as promoted (VISAPP_MODEL_VERSION)
    sha256: str  # of the weights served
    onnx: bool  # its ONNX export was fetched too (`visapp export`): predictions run on ONNX Runtime
    loaded_at: float


def load_promoted(settings: ServiceSettings, repository: Path | None = None) -> tuple[ServedModel, Path] | None:
    """The promoted version's weights (and its ONNX export, `best.onnx` beside them, when it was exported), fetched
    into the machine's cache; None when no version is promoted.

    Raises:
        VisError: the version cannot be fetched (unknown here, or its weights are in no cache and no remote).
    """
    version = settings.model_version
    if not version:
        return None
    from visapp.registry.export import onnx_of
    from visapp.registry.versions import get_model

    folder = settings.work_dir / CACHE / "served"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    root = repository or Path.cwd()
    try:
        weights = get_model(root, version, folder / "best.pt")
        onnx = onnx_of(root, version, folder / "best.onnx")
    except VisError as exc:
        raise VisError(f"VISAPP_MODEL_VERSION={version}: the service cannot serve it: {exc}") from None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    log.info("serving model %s (sha256 %s%s)", version, digest[:12], ", and its ONNX export" if onnx else "")
    return ServedModel(version=version, sha256=digest, onnx=onnx is not None, loaded_at=records.now()), weights
