"""cleanlab's object-detection label-quality scores: the one module that calls cleanlab.

cleanlab scores each image's given boxes against a model's predictions on it (made without training on it): a
predicted box no label covers (a missing box, "overlooked"), a label whose class the model swaps ("swap"), a
label the model places elsewhere ("badloc"); each score is in [0, 1], lower is likelier an error, and an image's
score pools its boxes'. We do not compute any score ourselves: this module only puts our boxes in cleanlab's
format and reads its answers.

One of cleanlab's parameters is ours to set: the confidence from which a prediction counts as the model being
sure (`high_confidence`). cleanlab's `get_label_quality_scores` fixes it at 0.95, made for confident models; a
YOLO trained for tens of epochs scores most true objects 0.8-0.95, so at 0.95 it sees almost no missed box and no
swapped class and ranks by the placement of the boxes alone. The image score is therefore built from cleanlab's
public parts, as `get_label_quality_scores` builds it: the three per-box scores (`compute_*_box_scores`, with
the threshold), pooled per image (`pool_box_scores_per_image`), and their geometric mean with equal weights
(cleanlab's default aggregation); at 0.95 it equals `get_label_quality_scores` (tested).

Compatibility: cleanlab 2.9 calls `numpy.in1d`, which numpy 2.4 removed; `numpy.isin` is its documented
replacement (same arguments, same result for 1-d input), lent to numpy for the calls made here only.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

TINY = 1e-100  # cleanlab's floor under a log (its TINY_VALUE)
KINDS = {"overlooked": "missing_box", "swap": "wrong_class", "badloc": "misplaced_box"}


@dataclass(frozen=True)
class ImageBoxes:
    """An image's boxes in pixels: the given labels, and the model's predictions (with their confidence)."""

    labels: Sequence[tuple[int, tuple[float, float, float, float]]]  # (class id, xyxy)
    predictions: Sequence[tuple[int, float, tuple[float, float, float, float]]]  # (class id, confidence, xyxy)


@dataclass(frozen=True)
class LabelIssue:
    """cleanlab's verdict on one image: its score, whether it is an issue, and its worst box of each kind."""

    score: float  # the image's label quality (lower: likelier wrong)
    issue: bool  # cleanlab's `find_label_issues` flags it
    kind: str | None  # the kind of the image's lowest-scored box: missing_box, wrong_class, misplaced_box
    kind_score: float | None
    label_index: int | None  # the given box involved (wrong_class, misplaced_box)
    prediction_index: int | None  # the predicted box involved (missing_box)


@contextlib.contextmanager
def _numpy_compat() -> Iterator[None]:
    import numpy as np

    if hasattr(np, "in1d"):
        yield
        return
    np.in1d = np.isin  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.in1d  # type: ignore[attr-defined]


def _inputs(images: Sequence[ImageBoxes], classes: int) -> tuple[list[dict[str, Any]], list[Any]]:
    import numpy as np

    labels, predictions = [], []
    for image in images:
        labels.append({
            "bboxes": np.array([box for _, box in image.labels], dtype=np.float32).reshape(-1, 4),
            "labels": np.array([class_id for class_id, _ in image.labels], dtype=np.int64),
        })  # fmt: skip
        per_class = np.empty(classes, dtype=object)
        for class_id in range(classes):
            rows = [[*box, conf] for cls, conf, box in image.predictions if cls == class_id]
            per_class[class_id] = np.array(rows, dtype=np.float32).reshape(-1, 5)
        predictions.append(per_class)
    return labels, predictions


def _lowest(scores: Any) -> tuple[float, int] | None:
    import numpy as np

    values = np.asarray(scores, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return None
    index = int(np.nanargmin(values))
    return float(values[index]), index


def label_issues(images: Sequence[ImageBoxes], classes: int, high_confidence: float) -> list[LabelIssue]:
    """cleanlab's label-quality verdict on each image (in the order given); a prediction of `high_confidence` or
    more is one the model is sure of (a missed box, a swapped class)."""
    import numpy as np
    from cleanlab.object_detection import filter as issues_filter
    from cleanlab.object_detection import rank

    labels, predictions = _inputs(images, classes)
    given = {"labels": labels, "predictions": predictions}
    # cleanlab prints its pruning counts to stdout: kept out of a stage's output (the log says what matters).
    with _numpy_compat(), contextlib.redirect_stdout(io.StringIO()):
        per_kind = {
            "overlooked": rank.compute_overlooked_box_scores(**given, high_probability_threshold=high_confidence),
            "swap": rank.compute_swap_box_scores(**given, high_probability_threshold=high_confidence),
            "badloc": rank.compute_badloc_box_scores(**given),
        }
        pooled = [rank.pool_box_scores_per_image(box_scores) for box_scores in per_kind.values()]
        # cleanlab's own list of the images it calls issues, at its own thresholds (it is this call that needs in1d).
        flagged = set(issues_filter.find_label_issues(labels, predictions, return_indices_ranked_by_score=True))
    scores = np.exp(sum(np.log(TINY + image_scores) for image_scores in pooled) / len(pooled))
    found = []
    for index, score in enumerate(scores):
        worst: tuple[float, str, int] | None = None
        for kind, box_scores in per_kind.items():
            lowest = _lowest(box_scores[index])
            if lowest is not None and (worst is None or lowest[0] < worst[0]):
                worst = (lowest[0], kind, lowest[1])
        found.append(
            LabelIssue(
                score=float(score),
                issue=index in flagged,
                kind=KINDS[worst[1]] if worst else None,
                kind_score=worst[0] if worst else None,
                label_index=worst[2] if worst and worst[1] != "overlooked" else None,
                prediction_index=worst[2] if worst and worst[1] == "overlooked" else None,
            )
        )
    return found
