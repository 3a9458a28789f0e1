"""params + data/yolo + data/raw -> models/yolo/{weights/best.pt, metrics.json, results.csv, plots/}, one MLflow run.

How a training runs:

- **A fresh dataset view.** Ultralytics derives label paths from image paths and writes `labels/*.cache`
  beside the labels, trusting that cache when paths and total byte size match. So training never reads
  `data/yolo`: each run rebuilds a view (links to the images in `data/raw`, copies of the labels) at
  `<checkpoint folder>/data`, and Ultralytics' cache lands there, never in a DVC output. The cache is written
  before Ultralytics starts, from validate's manifest (`visapp.integrations.ultralytics_labels`), keyed as
  Ultralytics keys it, so that it does not open every image again before the first batch.
- **Checkpoints outside the outputs** (`visapp.training.checkpoints`).
- **Resume** (`train.resume: auto`): when `<key>/run/weights/last.pt` holds an unfinished training (it has an
  epoch number and optimizer state), the run continues from it, in the same MLflow run. A training that
  finished but whose results were not all written (e.g. the tracking server went away at the very end) is not
  retrained: its results are written again. A finished and written training with the same key starts over in a
  clean folder: DVC only runs the stage when an output is missing or the user forces it (`dvc repro -f`), and
  both mean "train". A changed param or dataset gives another key, so it starts over. `train.resume: never`
  always starts over. Starting over in a folder says why in the log; a `last.pt` cut short by a kill is
  removed, one that this torch or Ultralytics cannot load is moved aside, never deleted.
- **Ultralytics for this run only** (`visapp.integrations.ultralytics.session`): offline, no integration of
  its own, its settings file untouched. Named weights (`model.weights: yolov8n.pt`) are looked up, and
  downloaded where the network allows, in `.cache/ultralytics/weights`, not in the working directory.
- **Progress**: each epoch reports its losses and metrics to the `progress` callback (task "train", unit
  "epoch") and to MLflow.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from visapp.config import Params, TrainConfig, flatten, params_dict, train_argument_names
from visapp.dataset.views import LinkView, build_link_view
from visapp.errors import VisError
from visapp.formats.manifest import MANIFEST_FILE, read_manifest
from visapp.formats.metadata import METADATA_FILE, read_metadata
from visapp.formats.yolo import DATA_YAML, read_data_yaml
from visapp.fsio import atomic_path, write_json, write_text
from visapp.integrations import cuda, ultralytics, ultralytics_labels
from visapp.integrations.dvc_env import repository_root
from visapp.progress import Progress, ProgressCallback
from visapp.training import tracking
from visapp.training.checkpoints import (
    checkpoint_base,
    checkpoint_key,
    plan_resume,
    prune_finished,
    read_state,
    save_state,
    start_over,
    training_lock,
)
from visapp.training.results import (
    METRICS_FILE,
    RESULTS_FILE,
    Metrics,
    clean_results,
    epoch_line_metrics,
    final_metrics,
    format_results,
    named,
)
from visapp.training.tracking import RUN_FILE, Run

log = logging.getLogger(__name__)

ULTRALYTICS_CACHE = Path(".cache/ultralytics")  # its weights, runs and config, under the repository root
# Ultralytics train arguments that visapp sets itself (where the data, the run and the checkpoint are): never taken
# from train.extra, nor are the keys of TrainConfig (train.<key> sets them).
CONTROLLED_ARGS = frozenset({"model", "data", "resume", "save_dir", "project", "name", "exist_ok", "mode", "task"})


def reserved_args() -> frozenset[str]:
    """The Ultralytics arguments train.extra may not set: TrainConfig's own keys and those visapp controls."""
    return CONTROLLED_ARGS | {f.name for f in fields(TrainConfig) if f.name != "extra"}


def asks_for_cuda(device: str) -> bool:
    """Whether `train.device` names GPUs only (`cuda`, indices such as "0,1" or "cuda:1"): no CPU fallback."""
    text = str(device).strip().lower()
    parts = [part.strip().removeprefix("cuda:") for part in text.split(",") if part.strip()]
    return text == "cuda" or (bool(parts) and all(part.isdigit() for part in parts))


def resolve_device(device: str, cuda_devices: int, why_none: Callable[[], str] = lambda: "") -> str:
    """The device Ultralytics trains on, from `train.device`.

    `auto` -> every visible CUDA device ("0", "0,1", ...: several train as one DDP job), else "cpu"; `cuda` ->
    every visible CUDA device, never the CPU; GPU indices ("0", "0,2", "cuda:1") as given; anything else ("cpu",
    "mps") as given.

    Raises:
        VisError: CUDA is asked for (`cuda` or indices) and torch sees none, or fewer; `why_none()` says what is
            missing. A GPU training stops here, at its start, instead of training on the CPU for hours.
    """
    text = str(device).strip().lower()
    visible = ",".join(str(index) for index in range(cuda_devices))
    if text == "auto":
        return visible or "cpu"
    if text == "cuda":
        if not cuda_devices:
            raise VisError(f"train.device=cuda needs a CUDA device, and torch sees none: {why_none()}")
        return visible
    indices = [part.strip().removeprefix("cuda:") for part in text.split(",") if part.strip()]
    if indices and all(index.isdigit() for index in indices):
        absent = [index for index in indices if int(index) >= cuda_devices]
        if absent and not cuda_devices:
            raise VisError(f"train.device={device} needs CUDA device {', '.join(absent)}, and torch sees none: "
                           f"{why_none()}")  # fmt: skip
        if absent:
            raise VisError(f"train.device={device}: torch sees {cuda_devices} CUDA device(s), numbered from 0: "
                           f"{', '.join(absent)} is not one of them")  # fmt: skip
    return str(device)


def is_ddp(device: str) -> bool:
    """Whether Ultralytics trains on several devices at once (DDP subprocesses)."""
    return len([part for part in str(device).split(",") if part.strip()]) > 1


def check_extra(extra: dict[str, Any]) -> None:
    """Refuse a train.extra that Ultralytics would refuse (an unknown argument, a value of the wrong type or range,
    by its own argument list) or that sets what visapp sets itself, before anything runs.

    Raises:
        VisError: naming the key, and the nearest known argument for a misspelt one.
    """
    clash = sorted(reserved_args() & set(extra))
    if clash:
        raise VisError(
            f"train.extra sets {', '.join(clash)}, which visapp sets itself: use train.<key> for "
            f"{'/'.join(f.name for f in fields(TrainConfig) if f.name != 'extra')}, and leave "
            f"{'/'.join(sorted(CONTROLLED_ARGS))} out"
        )
    for name, value in extra.items():
        problem = ultralytics.argument_problem(str(name), value)
        if problem:
            raise VisError(f"train.extra.{name}: {problem}")


def train_args(params: Params, data_yaml: Path, save_dir: Path, device: str) -> dict[str, Any]:
    """The arguments of Ultralytics' `train()`: train.extra, then every Ultralytics argument of TrainConfig (which
    extra may not override), then the data, the device and where the run goes."""
    train = params.train
    check_extra(train.extra)
    ours = {name: getattr(train, name) for name in train_argument_names()}
    return {
        **dict(train.extra),
        **{name: str(value) if isinstance(value, enum.Enum) else value for name, value in ours.items()},
        "data": str(data_yaml),
        "device": device,
        "save_dir": str(save_dir),
        "exist_ok": True,
    }


class _EpochReporter:
    """Ultralytics callback `on_fit_epoch_end`: each epoch to MLflow (step = epoch) and to `progress`.

    Ultralytics calls `on_fit_epoch_end` once more after training, for the final validation of best.pt; that
    call is not an epoch (its numbers are the final metrics, logged apart), and comes after the epoch call
    that had `trainer.stop` set, so it is skipped. The state is saved last: once it says an epoch's time, that
    epoch's checkpoint and metrics are written.
    """

    def __init__(
        self, run: Run | None, ckpt_dir: Path, state: dict[str, Any], epochs: int, progress: ProgressCallback | None
    ) -> None:
        self.run, self.ckpt_dir, self.state, self.epochs, self.progress = run, ckpt_dir, state, epochs, progress
        self.seconds_before, self.started = float(state.get("train_seconds") or 0.0), time.monotonic()
        self.done = False
        self.failed = False

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def first_epoch(self, trainer: Any) -> None:
        """Ultralytics callback `on_train_start`: the data is loaded, the first epoch of this run begins (no
        metrics yet: `done` is the epochs a resumed run has behind it)."""
        # Marks the time to the first batch (the data view, the label caches, the model and its data loaders).
        log.info("train: data loaded, model built: the first epoch starts")
        if self.progress is not None:
            self.progress(Progress("train", int(getattr(trainer, "start_epoch", 0) or 0), self.epochs, "epoch"))

    def __call__(self, trainer: Any) -> None:
        if self.done:
            return
        self.done = bool(trainer.stop)
        values = named(ultralytics.epoch_values(trainer))
        epoch = trainer.epoch + 1
        if self.run is not None and not self.failed:
            try:
                self.run.log_metrics(values, step=epoch)
            except Exception as exc:  # losing a curve is better than losing the training: warn, go on
                self.failed = True
                log.warning("MLflow stopped taking epoch metrics (%s); training goes on", exc)
        self.state.update(train_seconds=round(self.seconds(), 1), epoch=epoch)
        save_state(self.ckpt_dir, self.state)
        if self.progress is not None:
            self.progress(Progress("train", epoch, self.epochs, "epoch", epoch_line_metrics(values)))


def _tracking_uri(params: Params) -> str | None:
    """The tracking URI, checked before anything is trained; None when unreachable and not required."""
    uri = tracking.resolve_uri(params.tracking)
    try:
        tracking.check_reachable(uri)
    except VisError as exc:
        if params.tracking.required:
            raise
        log.warning("%s; training without tracking (tracking.required=false)", exc)
        return None
    return uri


def _end_abandoned_run(uri: str | None, state: dict[str, Any]) -> None:
    """A training that starts over in a folder whose training died before it had an epoch to resume from (or
    whose checkpoint cannot be read) leaves that training's MLflow run RUNNING: end it as KILLED, saying so."""
    run_id = state.get("mlflow_run_id")
    if uri is None or not run_id or state.get("tracking_uri") != uri:
        return
    if tracking.end_abandoned(uri, run_id):
        log.info("train: MLflow run %s of the training that stopped there is ended as KILLED", run_id)


def _open_run(uri: str | None, params: Params, metadata: dict[str, Any], key: str, state: dict[str, Any]) -> Run | None:
    """The MLflow run of this training: the one stored in the checkpoint state (resume), else a new one."""
    if uri is None:
        return None
    run_id = state.get("mlflow_run_id") if state.get("tracking_uri") == uri else None
    code = tracking.source()
    name = tracking.run_name(code, key)
    run = tracking.open_run(uri, params.tracking.experiment, name, tracking.run_tags(metadata, key, code), run_id)
    if code.dirty and not run_id:
        run.log_text(code.diff, "code/workspace.diff")
    changed = run.log_params(flatten(params_dict(params)))
    if changed:
        log.info("MLflow keeps the first logged value of %s (a param cannot change in a run)", ", ".join(changed))
    return run


def _backfill_epochs(run: Run | None, results_csv: Path, up_to: int) -> None:
    """Log the epochs of results.csv (up to the checkpoint's) that MLflow lacks: a kill can land between them."""
    if run is None or not results_csv.is_file():
        return
    logged = {m.step for m in run.client.get_metric_history(run.run_id, "metrics/mAP50-95")}
    _, rows = clean_results(results_csv.read_text(encoding="utf-8"))
    for row in rows:
        epoch = int(float(row["epoch"]))
        if epoch <= up_to and epoch not in logged:
            values = {k: float(v) for k, v in row.items() if k not in ("epoch", "time") and v not in ("", "nan")}
            run.log_metrics(values, step=epoch)


def _write_outputs(run_dir: Path, model_dir: Path, metrics: Metrics, run: Run | None) -> dict[str, Path]:
    """Copy the results out of the checkpoint folder into the stage's outputs (each written atomically)."""
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise VisError(f"training wrote no {best}: see Ultralytics' log above")
    with atomic_path(model_dir / "weights") as tmp:
        tmp.mkdir(parents=True)
        shutil.copyfile(best, tmp / "best.pt")
    write_json(model_dir / METRICS_FILE, metrics)
    columns, rows = clean_results((run_dir / "results.csv").read_text(encoding="utf-8"))
    write_text(model_dir / RESULTS_FILE, format_results(columns, rows))
    with atomic_path(model_dir / "plots") as tmp:
        tmp.mkdir(parents=True)
        for image in sorted([*run_dir.glob("*.png"), *run_dir.glob("labels*.jpg")]):  # curves; the label statistics
            shutil.copyfile(image, tmp / image.name)
    # Which MLflow run holds this model's history: committed with dvc.lock, so a release leads back to it.
    run_info = {"run_id": run.run_id, "experiment_id": run.experiment_id} if run else {"run_id": None}
    write_json(model_dir / RUN_FILE, run_info)
    return {
        "best": model_dir / "weights" / "best.pt",
        "metrics": model_dir / METRICS_FILE,
        "results": model_dir / RESULTS_FILE,
        "plots": model_dir / "plots",
    }


def _finish_tracking(run: Run, outputs: dict[str, Path], metrics: Metrics, inputs: list[Path]) -> None:
    run.log_metrics({key: float(value) for key, value in metrics.items()})
    run.log_artifact(outputs["best"], "weights")
    for name in ("metrics", "results", "plots"):
        run.log_artifact(outputs[name])
    for path in inputs:
        run.log_artifact(path, "data")
    run.end("FINISHED")


def _weights_path(params: Params, weights_dir: Path) -> Path | None:
    weights = params.model.weights
    if not weights:
        return None
    path = Path(weights)
    if path.exists():
        return path
    if len(path.parts) > 1:
        raise VisError(f"model.weights {weights} does not exist: give a path to local weights, or null")
    return weights_dir / weights  # a name: Ultralytics downloads it there where the network allows


def _load_model(params: Params, checkpoint: Path | None) -> Any:
    """The model to train: `checkpoint` to resume, else model.weights (or model.arch from scratch)."""
    weights = _weights_path(params, repository_root() / ULTRALYTICS_CACHE / "weights")
    try:
        return ultralytics.load_model(params.model.arch, weights, checkpoint)
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise VisError(
            f"model.weights {params.model.weights!r} could not be loaded ({exc}); offline, put the file at {weights} "
            f"or set model.weights to a local (DVC-tracked) path, or null to train from {params.model.arch}"
        ) from None


def fit_once(params: Params, data_yaml: Path, save_dir: Path, device: str) -> Path:
    """One training with the train params on `data_yaml` into `save_dir`: no checkpoint to resume, no MLflow run,
    no stage outputs (the label audit's fold models); its best.pt."""
    model = _load_model(params, None)
    ultralytics.fit(model, train_args(params, data_yaml.resolve(), save_dir.resolve(), device), lambda _: None)
    return save_dir / "weights" / "best.pt"


def _fit(
    params: Params,
    device: str,
    resume: bool,
    data_yaml: Path,
    ckpt_dir: Path,
    reporter: _EpochReporter,
) -> Metrics:
    """Run Ultralytics' training (or its resume) in `<ckpt_dir>/run`; return the metrics.json values."""
    run_dir = ckpt_dir / "run"
    model = _load_model(params, run_dir / "weights" / "last.pt" if resume else None)
    args = train_args(params, data_yaml.resolve(), run_dir.resolve(), device)
    if resume:
        # Ultralytics takes the other arguments from the checkpoint; these may differ on another machine.
        args = {name: args[name] for name in ("data", "device", "workers", "save_dir")} | {"resume": True}
    results = ultralytics.fit(model, args, reporter, on_start=reporter.first_epoch)
    _, rows = clean_results((run_dir / "results.csv").read_text(encoding="utf-8"))
    if is_ddp(device):
        # DDP ran our callback in no process: the epochs reach MLflow and the progress from results.csv (one
        # run, logged here, by the process that rank 0 reports to), and best.pt is validated here.
        _backfill_epochs(reporter.run, run_dir / "results.csv", len(rows))
        if reporter.progress is not None:
            reporter.progress(Progress("train", len(rows), params.train.epochs, "epoch"))
        first = device.split(",")[0]
        results = ultralytics.validate(run_dir / "weights" / "best.pt", data_yaml, params.train.imgsz,
                                       params.train.batch, first)  # fmt: skip
    reporter.state["train_seconds"] = round(reporter.seconds(), 1)
    return final_metrics(results, len(rows), reporter.seconds())


def dataset_view(params: Params, dest: Path) -> LinkView:
    """A link view of the converted dataset at `dest` (see visapp.dataset.views), with each split's Ultralytics
    label cache written from validate's manifest, so that Ultralytics does not open every image again before
    the first batch."""
    view = build_link_view(Path(params.paths.yolo), Path(params.paths.raw), dest)
    manifest = Path(params.paths.validated) / MANIFEST_FILE
    if not manifest.is_file():
        log.info("train: %s not found; Ultralytics verifies the images itself", manifest)
        return view
    rows = {}
    for _, row in read_manifest(manifest):
        row.objects = []  # the labels come from data/yolo, as Ultralytics reads them; a third of the memory
        rows[row.id] = row
    classes = len(read_data_yaml(view.data_yaml).names)
    single_cls = bool(params.train.extra.get("single_cls", False))
    for split, list_file in view.lists.items():
        samples = {path: rows[ident] for path, ident in view.samples[split].items() if ident in rows}
        ultralytics_labels.write_label_cache(list_file, samples, classes, single_cls)
    return view


def train_model(
    params: Params,
    environ: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    verbose: bool = False,
) -> Metrics:
    """Train (or resume) the detector, write the stage outputs, record one MLflow run; return metrics.json.

    Args:
        params: checked params; paths are relative to the working directory (the repository root under DVC).
        environ: read for `VISAPP_CHECKPOINT_DIR` (default: the process environment).
        progress: told after each epoch (task "train", unit "epoch", with the epoch's losses and metrics).
        verbose: let Ultralytics print as it does on a terminal (argument dump, layer table, bars).
    """
    if asks_for_cuda(params.train.device):  # a GPU training without a usable GPU stops first, in seconds
        resolve_device(params.train.device, ultralytics.cuda_device_count(), cuda.why_none)
    yolo_dir = Path(params.paths.yolo)
    metadata_path = Path(params.paths.metadata) / METADATA_FILE
    if not (yolo_dir / DATA_YAML).is_file():
        raise VisError(f"{yolo_dir / DATA_YAML} not found: run the convert stage first (`dvc repro convert`)")
    metadata = read_metadata(metadata_path)
    empty = [name for name in ("train", "val") if not (metadata.get("splits", {}).get(name) or {}).get("images")]
    if empty:
        counts = ", ".join(
            f"{name} {(split or {}).get('images', 0)}" for name, split in metadata.get("splits", {}).items()
        )
        raise VisError(
            f"the {' and '.join(empty)} split is empty ({counts} images): training needs images in both train and "
            "val; add images, or change data.split (or the ImageSets/Main lists)"
        )
    device = resolve_device(params.train.device, ultralytics.cuda_device_count(), cuda.why_none)
    train_args(params, Path(DATA_YAML), Path("run"), "cpu")  # refuse a bad train.extra before anything runs
    uri = _tracking_uri(params)  # an unreachable server fails here, before any training or folder
    key = checkpoint_key(params, metadata["fingerprint"])
    base = checkpoint_base(environ)
    ckpt_dir, run_dir = base / key, base / key / "run"

    with training_lock(base, key), ultralytics.session(repository_root() / ULTRALYTICS_CACHE, verbose=verbose):
        plan = plan_resume(params.train.resume, ckpt_dir)
        mode, state, resume_epoch = plan.mode, plan.state, plan.epoch
        if mode == "fresh":
            _end_abandoned_run(uri, read_state(ckpt_dir))
            start_over(base, ckpt_dir, plan)
        elif mode == "resume":
            log.info("train: resuming after epoch %s from %s", resume_epoch, run_dir / "weights" / "last.pt")
        else:
            log.info("train: the training in %s finished before; writing its results", ckpt_dir)
        run = _open_run(uri, params, metadata, key, state)
        try:
            state.update(key=key, mlflow_run_id=run.run_id if run else None, tracking_uri=uri if run else None)
            state.setdefault("status", "training")
            save_state(ckpt_dir, state)
            data_yaml = dataset_view(params, ckpt_dir / "data").data_yaml
            if mode != "finalize":
                if mode == "resume":
                    _backfill_epochs(run, run_dir / "results.csv", resume_epoch or 0)
                reporter = _EpochReporter(run, ckpt_dir, state, params.train.epochs, progress)
                state["metrics"] = _fit(params, device, mode == "resume", data_yaml, ckpt_dir, reporter)
                state["status"] = "trained"
                save_state(ckpt_dir, state)
            outputs = _write_outputs(run_dir, Path(params.paths.model), state["metrics"], run)
            if run is not None:
                _finish_tracking(run, outputs, state["metrics"], [yolo_dir / DATA_YAML, metadata_path])
        except BaseException as exc:
            if run is not None:
                with contextlib.suppress(Exception):
                    run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        state["status"] = "done"
        save_state(ckpt_dir, state)
        pruned = prune_finished(base, key)
        if pruned:
            log.info("train: removed the checkpoints of %d finished training(s) from %s", len(pruned), base)
        metrics: Metrics = state["metrics"]
        return metrics
