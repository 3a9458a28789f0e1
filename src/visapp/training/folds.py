"""Out-of-fold predictions for the train split (`audit.folds: K`): the images best.pt trained on, each predicted
by a model that did not.

A model's predictions on its own training images repeat their labels, errors included, so the audit cannot use
best.pt there. Instead the train split is cut into K seeded folds; K extra trainings (the stage's train params,
on the other K-1 folds, val choosing each best.pt as in the stage) each predict on the fold they left out. They
run in a scratch view and leave nothing behind: no checkpoint, no MLflow run, no stage output.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

from visapp.config import Params
from visapp.errors import VisError
from visapp.formats.voc_ids import sample_id
from visapp.formats.yolo import DataYaml, data_yaml_text, read_data_yaml, split_list_text
from visapp.integrations import cuda, ultralytics
from visapp.training.run import dataset_view, fit_once, resolve_device

log = logging.getLogger(__name__)


def assign_folds(images: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """`images` in `folds` seeded folds of sizes differing by one at most; each image in exactly one."""
    if folds < 2:
        raise VisError(f"audit.folds is {folds}: give 0 (off) or 2 and more")
    if len(images) < folds:
        raise VisError(f"audit.folds is {folds} but the train split has {len(images)} images: lower audit.folds")
    order = sorted(images)
    random.Random(seed).shuffle(order)
    return [sorted(order[index::folds]) for index in range(folds)]


def out_of_fold(params: Params, images: Sequence[str], scratch: Path) -> dict[str, ultralytics.Detections]:
    """Each train image of `images` (paths inside paths.raw) predicted by the fold model that did not train on it,
    down to `audit.confidence`; call it in an Ultralytics session."""
    device = resolve_device(params.train.device, ultralytics.cuda_device_count(), cuda.why_none)
    view = dataset_view(params, scratch / "data")
    listed = {ident: path for path, ident in view.samples["train"].items()}  # the view's path of each sample
    declared = read_data_yaml(view.data_yaml)
    raw_of = {sample_id(image): image for image in images}
    unknown = sorted(set(raw_of) - set(listed))
    if unknown:
        raise VisError(f"{unknown[0]} is not in the train split of {params.paths.yolo}: rerun the convert stage")
    folds = assign_folds(sorted(raw_of), params.audit.folds, params.seed)
    found: dict[str, ultralytics.Detections] = {}
    for number, held in enumerate(folds, start=1):
        trained = [listed[ident] for fold in folds if fold is not held for ident in fold]
        list_file = f"train-fold-{number}.txt"
        (view.root / list_file).write_text(split_list_text(trained), encoding="utf-8", newline="\n")
        fold_yaml = view.root / f"fold-{number}.yaml"
        splits = {"train": list_file, "val": declared.splits["val"]}
        view_yaml = DataYaml(declared.names, splits, str(view.root.resolve()))
        fold_yaml.write_text(data_yaml_text(view_yaml), encoding="utf-8", newline="\n")
        log.info(
            "audit: fold %d of %d: training on %d train images, predicting on the other %d",
            number, len(folds), len(trained), len(held),
        )  # fmt: skip
        weights = fit_once(params, fold_yaml, scratch / f"fold-{number}", device)
        predicted = ultralytics.predict(weights, [Path(listed[ident]) for ident in held], params.train.imgsz,
                                        params.audit.confidence, device.split(",")[0], agnostic=True)  # fmt: skip
        found.update({raw_of[ident]: detections for ident, detections in zip(held, predicted, strict=True)})
    return found
