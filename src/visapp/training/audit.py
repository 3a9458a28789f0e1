"""A trained model + the images it did not train on (val, test) -> the likely label errors, ranked: audit.json and
audit.png.

The model predicts on each held-out image (down to `audit.confidence`: cleanlab needs the low-confidence boxes,
a missed object is one), and cleanlab's object-detection scores (`visapp.integrations.cleanlab`) rank the images
by how likely their labels are wrong, naming the worst box's kind: a box the labeller missed, a wrong class, a
misplaced box. The given boxes are the converted YOLO labels, in the frame training sees, in that image's pixels,
as the predictions are. best.pt's own training images are left out: its predictions there repeat the labels,
errors included. With `audit.folds: K` they are audited too, each predicted by one of K extra models that did
not train on it (`visapp.training.folds`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visapp.config import Params
from visapp.errors import VisError
from visapp.formats.manifest import MANIFEST_FILE, read_manifest
from visapp.formats.voc_ids import sample_id
from visapp.formats.yolo import DATA_YAML, Box, label_relpath, parse_labels, read_data_yaml, split_list_images
from visapp.fsio import write_json
from visapp.integrations import cleanlab, ultralytics
from visapp.integrations.dvc_env import repository_root
from visapp.training.evaluate import scratch_folder
from visapp.training.folds import out_of_fold
from visapp.training.run import ULTRALYTICS_CACHE, resolve_device

log = logging.getLogger(__name__)

AUDIT_FILE, AUDIT_FIGURE = "audit.json", "audit.png"
XYXY = tuple[float, float, float, float]
AUDITED_SPLITS = ("val", "test")  # the images best.pt was not trained on
SHOWN_CONFIDENCE = 0.25  # audit.png draws the model's boxes from this confidence (audit.json keeps them all)


@dataclass
class Finding:
    """One image's verdict: its score (lower: likelier wrong), the kind of its worst box, the boxes involved."""

    image: str  # inside paths.raw
    annotation: str | None
    split: str
    size: tuple[int, int]  # (width, height) in the frame training sees: the boxes' pixels
    score: float
    issue: bool  # cleanlab flags it
    kind: str | None  # missing_box, wrong_class, misplaced_box
    kind_score: float | None
    box: dict[str, Any] | None  # the given or predicted box involved: class, xyxy (and confidence)
    given: list[dict[str, Any]]  # every label: class, xyxy
    predicted: list[dict[str, Any]]  # every prediction above the floor: class, confidence, xyxy


@dataclass
class Audit:
    """The label audit of a model's splits: each audited image's finding, likeliest label error first."""

    splits: list[str]
    images: int
    findings: list[Finding]  # every audited image, likeliest error first

    def summary(self) -> dict[str, Any]:
        """The counts: images audited, images flagged, and the flagged ones by kind of error."""
        flagged = [f for f in self.findings if f.issue]
        return {"images": self.images, "flagged": len(flagged), "kinds": _count(f.kind for f in flagged)}

    def to_dict(self) -> dict[str, Any]:
        """The audit as `audit.json` holds it: the splits, the counts and every finding."""
        return {"splits": self.splits, **self.summary(), "findings": [asdict(f) for f in self.findings]}


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _xyxy(box: Box, size: tuple[int, int]) -> XYXY:
    width, height = size
    return (
        (box.cx - box.w / 2) * width,
        (box.cy - box.h / 2) * height,
        (box.cx + box.w / 2) * width,
        (box.cy + box.h / 2) * height,
    )


def _round(values: Any) -> list[float]:
    return [round(float(v), 1) for v in values]


def audit(params: Params, weights: Path) -> Audit:
    """Predict on the held-out images with `weights` (and, with `audit.folds`, on the train images with the fold
    models) and rank them by cleanlab's label-quality scores."""
    yolo_dir, raw_dir = Path(params.paths.yolo), Path(params.paths.raw)
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    names = declared.names
    annotations = {row.image: row.annotation for _, row in read_manifest(Path(params.paths.validated) / MANIFEST_FILE)}
    splits = [s for s in AUDITED_SPLITS if s in declared.splits]
    if params.audit.folds and "train" in declared.splits:
        splits.append("train")  # predicted by the fold models (visapp.training.folds), not by best.pt
    samples: list[tuple[str, str, list[Box]]] = []  # (split, image, labels)
    for split in splits:
        for image in split_list_images(yolo_dir, raw_dir, declared.splits[split]):
            label = yolo_dir / label_relpath(split, sample_id(image))
            samples.append((split, image, parse_labels(label.read_bytes(), label, len(names))))
    if not samples:
        raise VisError(f"{yolo_dir} has no val or test image to audit: rerun the convert stage")
    device = resolve_device("auto", ultralytics.cuda_device_count()).split(",")[0]
    held_out = [raw_dir / image for split, image, _ in samples if split != "train"]
    with ultralytics.session(repository_root() / ULTRALYTICS_CACHE), scratch_folder() as scratch:
        # One box per place (NMS across classes): a model unsure of a class answers the object twice, and the
        # second box would read as an object the labeller missed.
        answers = ultralytics.predict(
            weights, held_out, params.train.imgsz, params.audit.confidence, device, agnostic=True
        )
        found = dict(zip(held_out, answers, strict=True))
        if "train" in splits:
            train = [image for split, image, _ in samples if split == "train"]
            found.update({raw_dir / image: d for image, d in out_of_fold(params, train, scratch).items()})
    images, boxes = [], []
    for _, image, labels in samples:
        detections = found[raw_dir / image]
        given = [(box.class_id, _xyxy(box, detections.size)) for box in labels]
        predicted: list[tuple[int, float, XYXY]] = [
            (int(c), float(p), (float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3])))
            for xyxy, p, c in zip(detections.xyxy, detections.confidence, detections.class_id, strict=True)
        ]
        images.append(detections.size)
        boxes.append(cleanlab.ImageBoxes(given, predicted))
    verdicts = cleanlab.label_issues(boxes, len(names), params.audit.high_confidence)
    findings = []
    for (split, image, _), size, image_boxes, verdict in zip(samples, images, boxes, verdicts, strict=True):
        labelled: list[dict[str, Any]] = [{"class": names[c], "xyxy": _round(xyxy)} for c, xyxy in image_boxes.labels]
        answered: list[dict[str, Any]] = [
            {"class": names[c], "confidence": round(p, 4), "xyxy": _round(xyxy)}
            for c, p, xyxy in image_boxes.predictions
        ]
        involved = None
        if verdict.label_index is not None:
            involved = labelled[verdict.label_index]
        elif verdict.prediction_index is not None:
            involved = answered[verdict.prediction_index]
        findings.append(
            Finding(
                image,
                annotations.get(image),
                split,
                size,
                round(verdict.score, 6),
                verdict.issue,
                verdict.kind,
                None if verdict.kind_score is None else round(verdict.kind_score, 6),
                involved,
                labelled,
                answered,
            )
        )
    findings.sort(key=lambda f: (f.score, f.image))
    log.info("audit: %d images of %s, %d flagged by cleanlab", len(findings), "/".join(splits),
             sum(f.issue for f in findings))  # fmt: skip
    return Audit(splits, len(findings), findings)


def write_audit(found: Audit, params: Params, model_dir: Path) -> None:
    """audit.json, and audit.png: the top `audit.top` images with their labels and the model's boxes."""
    from visapp.dataset.figures import AUDIT_TITLE, Example, draw_examples

    write_json(model_dir / AUDIT_FILE, found.to_dict())
    names = read_data_yaml(Path(params.paths.yolo) / DATA_YAML).names
    examples = []
    for finding in found.findings[: params.audit.top]:
        size = finding.size
        examples.append(
            Example(
                f"{finding.kind or 'none'} {finding.score:.3f}",
                sample_id(finding.image),
                size[0],
                size[1],
                1,
                Path(params.paths.raw) / finding.image,
                _boxes(finding.given, names, size),
                _boxes([b for b in finding.predicted if b["confidence"] >= SHOWN_CONFIDENCE], names, size),
            )
        )
    draw_examples(
        examples, names, model_dir / AUDIT_FIGURE, count=params.audit.top, title=AUDIT_TITLE, empty="no held-out image"
    )


def _boxes(boxes: list[dict[str, Any]], names: list[str], size: tuple[int, int]) -> tuple[Box, ...]:
    width, height = size
    found = []
    for box in boxes:
        x0, y0, x1, y1 = box["xyxy"]
        found.append(
            Box(
                names.index(box["class"]),
                (x0 + x1) / 2 / width,
                (y0 + y1) / 2 / height,
                (x1 - x0) / width,
                (y1 - y0) / height,
            )
        )
    return tuple(found)
