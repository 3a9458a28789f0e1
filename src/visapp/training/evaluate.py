"""A trained model + the converted dataset -> how good it is on images it never saw: eval.json and its figures.

The held-out split is `test` (ImageSets' `test.txt`, else convert's seeded share, `data.split.test`): neither the
training nor the choice of best.pt (which val makes) saw it. A dataset without test images is evaluated on val,
and eval.json says so (`split`, `note`): val's figures then flatter the model. The evaluation runs Ultralytics'
own validation on a link view of the dataset in a scratch folder (`visapp.dataset.views`), so no label cache
lands in a DVC output, and it is the one function behind the `evaluate` stage, the release gate, `visapp
compare` and the service's evaluations.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visapp.config import Params
from visapp.errors import VisError
from visapp.formats.yolo import DATA_YAML, read_data_yaml
from visapp.integrations import ultralytics
from visapp.integrations.dvc_env import repository_root
from visapp.training.run import ULTRALYTICS_CACHE, dataset_view, resolve_device

log = logging.getLogger(__name__)

EVAL_FILE, EVAL_PLOTS = "eval.json", "eval_plots"
SCRATCH = Path(".cache/evaluate")  # under the repository: the view and Ultralytics' validation run
KEPT_PLOTS = ("confusion_matrix.png", "confusion_matrix_normalized.png", "BoxPR_curve.png", "BoxF1_curve.png")
METRICS = ("precision", "recall", "mAP50", "mAP50-95")


@dataclass
class Evaluation:
    """A model's figures on one split: overall, per class (by name), and how fast it answered here."""

    split: str
    images: int
    objects: int
    overall: dict[str, float]
    classes: dict[str, dict[str, float | int]]
    inference_ms_per_image: float
    device: str
    note: str | None = None
    plots: Path | None = field(default=None, repr=False)  # Ultralytics' figures, while the scratch lives

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as `eval.json` holds it (without the paths of its plots)."""
        data = asdict(self)
        data.pop("plots")
        return data


def held_out_split(yolo_dir: Path) -> tuple[str, str | None]:
    """The split to evaluate on: `test` when convert wrote test images, else `val` and why."""
    declared = read_data_yaml(Path(yolo_dir) / DATA_YAML)
    if "test" in declared.splits:
        return "test", None
    return "val", (
        "the dataset has no test split (data.split.test is 0, or no ImageSets test.txt): evaluated on val, which "
        "also chose best.pt, so these figures flatter the model; set data.split.test (e.g. 0.1) for a held-out test"
    )


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A folder of its own under the repository's scratch space, removed afterwards (views, fold trainings)."""
    base = repository_root() / SCRATCH
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def evaluating(params: Params, weights: Path, split: str | None = None, plots: bool = True) -> Iterator[Evaluation]:
    """Evaluate `weights` on the held-out split of `params.paths.yolo` (or `split`); the figures live as long as
    the block (`Evaluation.plots`).

    Raises:
        VisError: weights or the converted dataset missing, or a split without images.
    """
    weights, yolo_dir = Path(weights), Path(params.paths.yolo)
    if not weights.is_file():
        raise VisError(f"{weights} not found: train first (`dvc repro train`), or `dvc pull` the model")
    if not (yolo_dir / DATA_YAML).is_file():
        raise VisError(f"{yolo_dir / DATA_YAML} not found: run the convert stage first (`dvc repro convert`)")
    chosen, note = held_out_split(yolo_dir) if split is None else (split, None)
    if note:
        log.warning("evaluate: %s", note)
    # A GPU when there is one, else the CPU: evaluating is not training, and must run on a laptop too.
    device = resolve_device("auto", ultralytics.cuda_device_count())
    with scratch_folder() as folder, ultralytics.session(repository_root() / ULTRALYTICS_CACHE):
        data_yaml = dataset_view(params, folder / "data").data_yaml
        found = ultralytics.validate_split(
            weights,
            data_yaml,
            chosen,
            params.train.imgsz,
            max(params.train.batch, 1),
            device.split(",")[0],
            folder / "val",
            plots,
        )
        names = read_data_yaml(data_yaml).names
        classes: dict[str, dict[str, float | int]] = {}
        for class_id, name in enumerate(names):
            figures = found.per_class.get(class_id, dict.fromkeys(METRICS, 0.0))
            classes[name] = {
                **{k: round(v, 6) for k, v in figures.items()},
                "images": found.images.get(class_id, 0),
                "objects": found.objects.get(class_id, 0),
            }
        listed = (data_yaml.parent / f"{chosen}.txt").read_text(encoding="utf-8").splitlines()
        images = sum(1 for line in listed if line.strip())
        yield Evaluation(
            split=chosen,
            images=images,
            objects=sum(found.objects.values()),
            overall={key: round(value, 6) for key, value in found.overall.items()},
            classes=classes,
            inference_ms_per_image=round(found.speed_ms.get("inference", 0.0), 2),
            device=device.split(",")[0],
            note=note,
            plots=found.plots,
        )


def evaluate_weights(params: Params, weights: Path, split: str | None = None) -> Evaluation:
    """`evaluating`, without the figures: the numbers only (the release gate, `visapp compare`)."""
    with evaluating(params, weights, split, plots=False) as found:
        found.plots = None
        return found


def write_evaluation(found: Evaluation, model_dir: Path) -> None:
    """eval.json (DVC metrics) and its figures (`eval_plots/`, DVC plots) in the model's folder."""
    from visapp.fsio import atomic_path, write_json

    write_json(model_dir / EVAL_FILE, found.to_dict())
    with atomic_path(model_dir / EVAL_PLOTS) as tmp:
        tmp.mkdir(parents=True)
        for name in KEPT_PLOTS:
            if found.plots is not None and (found.plots / name).is_file():
                shutil.copyfile(found.plots / name, tmp / name)


def run_evaluate(params: Params) -> dict[str, Any]:
    """The evaluate stage: the model's evaluation on the held-out split and its label audit, in `paths.model`."""
    from visapp.training.audit import audit, write_audit

    model_dir = Path(params.paths.model)
    weights = model_dir / "weights" / "best.pt"
    with evaluating(params, weights) as found:
        write_evaluation(found, model_dir)
    findings = audit(params, weights)
    write_audit(findings, params, model_dir)
    return {"evaluation": found.to_dict(), "audit": findings.summary()}
