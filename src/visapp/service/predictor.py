"""Boxes for an uploaded image, from a released version or a job's model, loaded once per process.

A version predicts with ONNX Runtime on the CPU when it was exported (`visapp export`), else with PyTorch; a
job's model with PyTorch. The image is checked as validation checks one (the formats it takes, whole, at most
`data.max_image_pixels`) and then read as training reads it (EXIF orientation applied), from a file in the
machine's cache. Predictions run one at a time (Ultralytics' predictors are not shared between threads, and
they are CPU-bound here anyway).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.formats.images import ImageError, inspect_image
from visapp.integrations import ultralytics
from visapp.service.scratch import CACHE

MODELS = "models"  # under the machine's cache: each version's or job's model, fetched once


class ImageRefused(VisError):
    """An upload that is not an image the models take: `code` is validation's (image_unreadable, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Loaded:
    """A model loaded for predictions, with the name the answers give it."""

    label: str  # what the answer names: the version, or the job and its attempt
    model: ultralytics.LoadedModel


class Predictors:
    """The models this process has loaded, by version or job attempt; one prediction at a time."""

    def __init__(self, work_dir: Path) -> None:
        self.cache = work_dir / CACHE / MODELS
        self._models: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def loaded(self, key: str, label: str, fetch: Any) -> Loaded:
        """The model under `key`, loaded once: `fetch(folder)` writes its file and returns the path."""
        with self._lock:
            if key not in self._models:
                folder = self.cache / hashlib.sha256(key.encode()).hexdigest()[:16]
                folder.mkdir(parents=True, exist_ok=True)
                with ultralytics.session(self.cache.parent / "ultralytics"):
                    self._models[key] = Loaded(label, ultralytics.load(fetch(folder)))
            return self._models[key]

    def predict(self, loaded: Loaded, data: bytes, max_pixels: int, confidence: float) -> dict[str, Any]:
        """Check the image, predict, and answer the boxes in its pixels (the frame training sees)."""
        try:
            info = inspect_image(data, max_pixels)
        except ImageError as exc:
            raise ImageRefused(exc.code, exc.message) from None
        suffix = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}.get(info.format, ".img")
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(suffix=suffix, dir=self.cache) as image, self._lock:
            image.write(data)
            image.flush()
            started = time.perf_counter()
            with ultralytics.session(self.cache.parent / "ultralytics"):
                found = ultralytics.detect(loaded.model, image.name, confidence)
            took = (time.perf_counter() - started) * 1000
        names = loaded.model.model.names
        boxes = [
            {"class": names[int(c)], "class_id": int(c), "confidence": round(float(p), 4),
             "xyxy": [round(float(v), 1) for v in xyxy]}
            for xyxy, p, c in zip(found.xyxy, found.confidence, found.class_id, strict=True)
        ]  # fmt: skip
        return {
            "model": {"name": loaded.label, "runtime": loaded.model.runtime, "imgsz": loaded.model.imgsz},
            "image": {"width": found.size[0], "height": found.size[1], "format": info.format},
            "confidence": confidence,
            "boxes": boxes,
            "ms": round(took, 1),
        }
