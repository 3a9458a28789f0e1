"""A model version -> its ONNX export, checked against PyTorch, kept with DVC: it runs anywhere without PyTorch.

Ultralytics' own exporter writes the ONNX file (at `train.imgsz`, fixed). The export is accepted only when ONNX
Runtime gives the same boxes as PyTorch on the test split's images (`check_parity`): every PyTorch box above
`CONFIDENCE` matched by an ONNX box of its class with IoU >= 0.99, scores within 1e-3. The file is kept in the
repository as `models/exports/<name>/<version>.onnx`, tracked by DVC (its .dvc file is committed, the bytes go
to the cache and, with `--push`, to the remote), so a checkout of any later commit can fetch a version's export:
`onnx_of`, which the service's downloads and predictions use.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from visapp.config import Params
from visapp.errors import VisError
from visapp.formats.yolo import DATA_YAML, read_data_yaml, split_list_images
from visapp.integrations import dvc, ultralytics
from visapp.integrations.dvc_env import repository_root
from visapp.registry.refs import ARTIFACT, parse_ref
from visapp.registry.versions import get_model, resolve
from visapp.training.run import ULTRALYTICS_CACHE

EXPORTS = Path("models/exports")
CONFIDENCE, MIN_IOU, MAX_SCORE_GAP = 0.25, 0.99, 1e-3
PARITY_IMAGES = 50  # at most, from the test split (else val)


@dataclass
class Parity:
    """How closely the ONNX model's boxes match the PyTorch model's on the same images."""

    images: int
    boxes: int  # PyTorch boxes above CONFIDENCE, each matched by an ONNX box
    worst_iou: float
    worst_score_gap: float

    def __str__(self) -> str:
        return (f"parity with PyTorch on {self.images} images: {self.boxes} boxes matched, worst IoU "
                f"{self.worst_iou:.4f}, worst score gap {self.worst_score_gap:.2e}")  # fmt: skip


def export_path(name: str, version: str) -> Path:
    """Where the ONNX export of a model version lives (`models/exports/<name>/<version>.onnx`)."""
    return EXPORTS / name / f"{version}.onnx"


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_parity(weights: Path, onnx: Path, images: list[Path], imgsz: int) -> Parity:
    """ONNX Runtime against PyTorch on `images`.

    Raises:
        VisError: a PyTorch box no ONNX box matches (class, IoU >= MIN_IOU, score within MAX_SCORE_GAP).
    """
    torch_model, onnx_model = ultralytics.load(weights), ultralytics.load(onnx)
    boxes, worst_iou, worst_gap = 0, 1.0, 0.0
    for image in images:
        ours = ultralytics.detect(torch_model, str(image), CONFIDENCE, imgsz)
        theirs = ultralytics.detect(onnx_model, str(image), CONFIDENCE * 0.5, imgsz)  # a box at the edge still counts
        for xyxy, conf, cls in zip(ours.xyxy, ours.confidence, ours.class_id, strict=True):
            candidates = [(_iou(tuple(xyxy), tuple(other)), abs(float(conf) - float(other_conf)))
                          for other, other_conf, other_cls in zip(theirs.xyxy, theirs.confidence, theirs.class_id,
                                                                  strict=True) if other_cls == cls]  # fmt: skip
            best = max(candidates, default=(0.0, 1.0), key=lambda pair: (pair[0], -pair[1]))
            if best[0] < MIN_IOU or best[1] > MAX_SCORE_GAP:
                raise VisError(
                    f"the ONNX export differs from PyTorch on {image.name}: a class {cls} box at "
                    f"{[round(float(v), 1) for v in xyxy]} ({float(conf):.3f}) has no ONNX match (best IoU "
                    f"{best[0]:.3f}, score gap {best[1]:.2e}); the export is not kept"
                )
            boxes += 1
            worst_iou, worst_gap = min(worst_iou, best[0]), max(worst_gap, best[1])
    return Parity(len(images), boxes, worst_iou, worst_gap)


def _parity_images(params: Params) -> list[Path]:
    yolo_dir, raw_dir = Path(params.paths.yolo), Path(params.paths.raw)
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    split = "test" if "test" in declared.splits else "val"
    found = split_list_images(yolo_dir, raw_dir, declared.splits[split])[:PARITY_IMAGES]
    if not found:
        raise VisError(f"{yolo_dir} has no {split} image to check the export on: rerun the convert stage")
    return [raw_dir / image for image in found]


def export_onnx(root: Path, ref: str, params: Params) -> tuple[Path, Parity]:
    """Export a version (`yolo@v1.0.0`, `yolo#prod`) to ONNX, check its parity, `dvc add` it; (the .dvc file to
    commit, the parity)."""
    found = resolve(root, ref)
    target = root / export_path(found.name, found.version)
    with tempfile.TemporaryDirectory(prefix="visapp-export-") as tmp:
        weights = get_model(root, ref, Path(tmp) / "best.pt")
        with ultralytics.session(repository_root() / ULTRALYTICS_CACHE):
            onnx = ultralytics.export_onnx(weights, params.train.imgsz)
            parity = check_parity(weights, onnx, _parity_images(params), params.train.imgsz)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx, target)
    return dvc.track_file(root, target), parity


def has_onnx(root: Path, name: str, version: str) -> bool:
    """Whether a version was exported to ONNX: its export's `.dvc` file is in the workspace."""
    path = export_path(name, version)
    return (Path(root) / path.with_name(path.name + ".dvc")).is_file()


def onnx_of(root: Path, ref: str, out: Path) -> Path | None:
    """A version's ONNX export, fetched (cache, else remote) to `out`; None when it was never exported."""
    try:
        found = resolve(root, ref)
    except VisError:
        parsed = parse_ref(ref, ARTIFACT)
        raise VisError(f"no version {ref!r} of {parsed.name}") from None
    path = export_path(found.name, found.version)
    if not has_onnx(root, found.name, found.version):
        return None
    revision = dvc.Revision(root, "HEAD")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        revision.download({str(path): out})
    finally:
        revision.close()
    return out
