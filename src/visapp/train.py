"""params + data/yolo + data/raw -> models/yolo/{weights/best.pt, metrics.json, results.csv, plots/}, one MLflow run.

How a training runs (DESIGN.md "Training"):

- **A fresh dataset view.** Ultralytics derives label paths from image paths and writes `labels/*.cache`
  beside the labels, trusting that cache when paths and total byte size match. So training never reads
  `data/yolo`: each run rebuilds a view (links to the images in `data/raw`, copies of the labels) at
  `<checkpoint folder>/data`, with no cache in it, and Ultralytics' cache lands there, never in a DVC output.
- **Checkpoints outside the outputs.** DVC deletes a stage's outputs before running it, so Ultralytics works
  in `<checkpoint base>/<key>/run/`; `<key>` is a hash of what decides the training (the `model` and `train`
  sections except `train.resume`, `seed`) and of the data (the dataset fingerprint of dataset_metadata.json).
  The base is `$VISAPP_CHECKPOINT_DIR`, else `.cache/train` under the working directory (the repository root
  when DVC runs the stage; git- and dvc-ignored). Sync that base to S3 on spot runners.
- **Resume** (`train.resume: auto`): when `<key>/run/weights/last.pt` holds an unfinished training (it has an
  epoch number and optimizer state), the run continues from it, in the same MLflow run. A training that
  finished but whose results were not all written (e.g. the tracking server went away at the very end) is not
  retrained: its results are written again. A finished and written training with the same key starts over in a
  clean folder: DVC only runs the stage when an output is missing or the user forces it (`dvc repro -f`), and
  both mean "train". A changed param or dataset gives another key, so it starts over. `train.resume: never`
  always starts over.
- **Offline.** `YOLO_OFFLINE=true` and `YOLO_AUTOINSTALL=false` unless set; Ultralytics' settings are set on
  every run (no analytics, no integration callbacks: we drive MLflow ourselves); the fonts its plots ask for
  (`Arial.ttf`, `Arial.Unicode.ttf`, which it would download) are provided from matplotlib's bundled DejaVu
  Sans. Named weights (`model.weights: yolov8n.pt`) are looked up, and downloaded where the network allows,
  in `.cache/ultralytics/weights`, not in the working directory; so is `yolo26n.pt`, which Ultralytics' AMP
  check fetches on CUDA only (offline the fetch fails, and the check is skipped with AMP left on). With no
  network a training makes no connection attempt at all on CPU (a test checks it with a socket guard).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visapp.config import Params, flatten, workspace_root
from visapp.errors import VisError
from visapp.fsio import atomic_path, dumps_json, write_json, write_text

CHECKPOINT_ENV = "VISAPP_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = Path(".cache/train")
ULTRALYTICS_CACHE_DIR = Path(".cache/ultralytics")  # its weights_dir and runs_dir: out of the repository root
METADATA_FILE = "dataset_metadata.json"
STATE_FILE = "state.json"
RUN_FILE = "mlflow_run.json"  # beside metrics.json: the MLflow run of the model (visapp.registry reads it)
# Ultralytics train arguments that come from our own params or that we must control: not allowed in train.extra.
RESERVED_ARGS = frozenset(
    {"model", "data", "epochs", "imgsz", "batch", "device", "workers", "patience", "optimizer", "lr0", "seed"}
    | {"resume", "save_dir", "project", "name", "exist_ok", "mode", "task"}
)
# The metrics.json keys (DESIGN.md) and the Ultralytics keys they come from.
FINAL_METRICS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "fitness": "fitness",
}
INTEGRATIONS_OFF = {
    "sync": False,  # anonymous usage analytics
    "mlflow": False,  # its own MLflow callback would open a second run
    "dvc": False,  # DVCLive: DVC gets metrics.json and results.csv from us
    "clearml": False,
    "comet": False,
    "raytune": False,
    "wandb": False,
    "tensorboard": False,
}
# Callbacks we keep: Ultralytics' defaults and our own. Any other (integrations, analytics, its Platform
# streaming, which needs only an API key in the environment) is removed from the trainer before it runs.
_FOREIGN_CALLBACK_MODULES = ("ultralytics.utils.callbacks.", "ultralytics.utils.events")
_KEPT_CALLBACK_MODULES = ("ultralytics.utils.callbacks.base",)


# --------------------------------------------------------------------------------------------------- pure parts


def resolve_device(device: str, cuda_available: bool) -> str:
    """`auto` -> "0" (the first CUDA device) when CUDA is available, else "cpu"; anything else as given."""
    if str(device).lower() != "auto":
        return str(device)
    return "0" if cuda_available else "cpu"


def checkpoint_key(params: Params, fingerprint: str) -> str:
    """16 hex digits naming the checkpoint folder: model + train (but resume) + seed + dataset fingerprint."""
    train = asdict(params.train)
    train.pop("resume")  # how to handle a checkpoint, not what is trained
    payload = {"model": asdict(params.model), "train": train, "seed": params.seed, "data": fingerprint}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def checkpoint_base(environ: dict[str, str] | None = None) -> Path:
    """`$VISAPP_CHECKPOINT_DIR`, else `.cache/train` in the repository (also for a queued experiment)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(CHECKPOINT_ENV):
        return Path(environ[CHECKPOINT_ENV])
    return workspace_root() / DEFAULT_CHECKPOINT_DIR


def train_args(params: Params, data_yaml: Path, save_dir: Path, device: str) -> dict[str, Any]:
    """The arguments of Ultralytics' `train()`: our train.* keys, then train.extra (which may not override them)."""
    train = params.train
    clash = sorted(RESERVED_ARGS & set(train.extra))
    if clash:
        raise VisError(
            f"train.extra sets {', '.join(clash)}, which visapp sets itself: use train.<key> for "
            f"epochs/imgsz/batch/device/workers/patience/optimizer/lr0/seed, and leave the others out"
        )
    return {
        **dict(train.extra),
        "data": str(data_yaml),
        "epochs": train.epochs,
        "imgsz": train.imgsz,
        "batch": train.batch,
        "device": device,
        "workers": train.workers,
        "patience": train.patience,
        "optimizer": train.optimizer,
        "lr0": train.lr0,
        "seed": train.seed,
        "save_dir": str(save_dir),
        "exist_ok": True,
    }


def clean_results(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Ultralytics' results.csv -> (columns, rows): names without padding or "(B)", one row per epoch.

    8.4 writes unpadded names, older versions padded them ("      epoch"). A training resumed from a checkpoint
    older than the last row written repeats that epoch: the later row wins. Rows are sorted by epoch.
    """
    from visapp.tracking import metric_name

    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        return [], []
    columns = [metric_name(name) for name in header]
    by_epoch: dict[int, dict[str, str]] = {}
    for values in reader:
        if len(values) != len(columns):
            continue  # a row cut short by a kill
        row = {name: value.strip() for name, value in zip(columns, values, strict=True)}
        with contextlib.suppress(KeyError, ValueError):
            by_epoch[int(float(row["epoch"]))] = row
    return columns, [by_epoch[epoch] for epoch in sorted(by_epoch)]


def format_results(columns: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def final_metrics(results: dict[str, Any], epochs: int, seconds: float) -> dict[str, float | int]:
    """Ultralytics' validation results of best.pt -> metrics.json (DESIGN.md keys), rounded to 6 decimals."""
    metrics: dict[str, float | int] = {
        name: round(float(results.get(key, 0.0)), 6) for name, key in FINAL_METRICS.items()
    }
    metrics["epochs"] = int(epochs)
    metrics["train_seconds"] = round(float(seconds), 1)
    return metrics


def epoch_metrics(trainer: Any) -> dict[str, float]:
    """What Ultralytics writes as one results.csv row (losses, metrics, learning rates), with our names."""
    from visapp.tracking import metric_name

    values: dict[str, Any] = {}
    if trainer.tloss is not None:
        values.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
    values.update(trainer.metrics or {})
    values.update(getattr(trainer, "lr", None) or {})
    return {metric_name(key): float(value) for key, value in values.items()}


# ------------------------------------------------------------------------------------------ the checkpoint folder


def read_state(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    write_text(ckpt_dir / STATE_FILE, dumps_json(state))


def resumable_epoch(last_pt: Path) -> int | None:
    """The epoch (1-based) an unfinished Ultralytics checkpoint ends with, or None (absent, finished, unreadable).

    A finished training's last.pt is stripped (epoch -1, no optimizer). One that saved its final epoch but
    was stopped before stripping cannot be resumed either (Ultralytics refuses: nothing left to train).
    """
    if not last_pt.is_file():
        return None
    import torch

    try:
        ckpt = torch.load(last_pt, map_location="cpu", weights_only=False)
    except Exception:  # a file cut short by a kill while being written
        return None
    epoch = ckpt.get("epoch", -1) if isinstance(ckpt, dict) else -1
    total = (ckpt.get("train_args") or {}).get("epochs", 0) if isinstance(ckpt, dict) else 0
    if epoch is None or epoch < 0 or ckpt.get("optimizer") is None or epoch + 1 >= total:
        return None
    return epoch + 1


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One training per checkpoint key at a time (two queued experiments with the same params would collide)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, no guard
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VisError(
                f"another training with the same params and data is running (lock {lock_path}); wait for it, "
                f"or give this one another {CHECKPOINT_ENV}"
            ) from None
        yield


# -------------------------------------------------------------------------------------------------- Ultralytics


def configure_ultralytics(cache_dir: Path) -> None:
    """Make Ultralytics safe offline: env switches before its import, settings and local fonts on every run."""
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import ultralytics.utils
    from ultralytics import settings
    from ultralytics.utils import USER_CONFIG_DIR

    cache_dir = cache_dir.resolve()
    wanted = {
        **INTEGRATIONS_OFF,
        "weights_dir": str(cache_dir / "weights"),
        "runs_dir": str(cache_dir / "runs"),
    }
    if any(settings.get(key) != value for key, value in wanted.items()):
        settings.update(wanted)
    # Read once at import: the AMP check on CUDA fetches yolo26n.pt into it (offline it gives up and keeps AMP).
    ultralytics.utils.WEIGHTS_DIR = Path(wanted["weights_dir"])
    provide_fonts(Path(USER_CONFIG_DIR))


def provide_fonts(config_dir: Path) -> list[Path]:
    """Put matplotlib's DejaVu Sans where Ultralytics looks for Arial before downloading it (`check_font`)."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    written = []
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = config_dir / name
        if not target.exists() and source.is_file():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            written.append(target)
    return written


def _drop_foreign_callbacks(trainer: Any) -> None:
    """Remove integration and analytics callbacks Ultralytics added, whatever its settings file says.

    Runs as the first `on_pretrain_routine_start` callback after Ultralytics added them; the lists are edited
    in place, so the callbacks of the event being run are dropped too.
    """
    for callbacks in trainer.callbacks.values():
        callbacks[:] = [
            cb
            for cb in callbacks
            if not str(getattr(cb, "__module__", "")).startswith(_FOREIGN_CALLBACK_MODULES)
            or str(getattr(cb, "__module__", "")).startswith(_KEPT_CALLBACK_MODULES)
        ]


def _build_model(params: Params, last_pt: Path | None, weights_dir: Path) -> Any:
    """A YOLO model: from a resumable checkpoint, else from model.arch (+ model.weights when set)."""
    from ultralytics import YOLO

    if last_pt is not None:
        return YOLO(str(last_pt))
    model = YOLO(params.model.arch)
    weights = params.model.weights
    if weights:
        path = Path(weights)
        if not path.exists():
            if len(path.parts) > 1:
                raise VisError(f"model.weights {weights} does not exist: give a path to local weights, or null")
            path = weights_dir / weights  # a name: Ultralytics downloads it there where the network allows
        try:
            model.load(str(path))
        except (ConnectionError, FileNotFoundError, OSError) as exc:
            raise VisError(
                f"model.weights {weights!r} could not be loaded ({exc}); offline, put the file at {path} or set "
                f"model.weights to a local (DVC-tracked) path, or null to train from {params.model.arch}"
            ) from None
    return model


# ------------------------------------------------------------------------------------------------------- train


class _EpochLogger:
    """Ultralytics callback `on_fit_epoch_end`: each epoch's row to MLflow (step = epoch), then the time so far.

    Ultralytics calls `on_fit_epoch_end` once more after training, for the final validation of best.pt; that
    call is not an epoch (its numbers are the final metrics, logged apart), and comes after the epoch call
    that had `trainer.stop` set, so it is skipped. The state is saved last: once it says an epoch's time, that
    epoch's checkpoint and metrics are written.
    """

    def __init__(self, run: Any, ckpt_dir: Path, state: dict[str, Any]) -> None:
        self.run, self.ckpt_dir, self.state = run, ckpt_dir, state
        self.seconds_before, self.started = float(state.get("train_seconds") or 0.0), time.monotonic()
        self.done = False
        self.failed = False

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def __call__(self, trainer: Any) -> None:
        if self.done:
            return
        self.done = bool(trainer.stop)
        if self.run is not None and not self.failed:
            try:
                self.run.log_metrics(epoch_metrics(trainer), step=trainer.epoch + 1)
            except Exception as exc:  # losing a curve is better than losing the training: warn, go on
                self.failed = True
                print(f"warning: MLflow stopped taking epoch metrics ({exc}); training goes on", flush=True)
        self.state.update(train_seconds=round(self.seconds(), 1), epoch=trainer.epoch + 1)
        save_state(self.ckpt_dir, self.state)


def _tracking_uri(params: Params) -> str | None:
    """The tracking URI, checked before anything is trained; None when unreachable and not required."""
    from visapp import tracking

    uri = tracking.resolve_uri(params.tracking)
    try:
        tracking.check_reachable(uri)
    except VisError as exc:
        if params.tracking.required:
            raise
        print(f"warning: {exc}; training without tracking (tracking.required=false)", flush=True)
        return None
    return uri


def _open_run(uri: str | None, params: Params, metadata: dict[str, Any], key: str, state: dict[str, Any]) -> Any:
    """The MLflow run of this training: the one stored in the checkpoint state (resume), else a new one."""
    if uri is None:
        return None
    from visapp import tracking

    run_id = state.get("mlflow_run_id") if state.get("tracking_uri") == uri else None
    run_name = os.environ.get(tracking.EXP_NAME_ENV) or f"train-{key[:8]}"
    run = tracking.open_run(uri, params.tracking.experiment, run_name, tracking.run_tags(metadata, key), run_id)
    changed = run.log_params(flatten(asdict(params)))
    if changed:
        print(f"note: MLflow keeps the first logged value of {', '.join(changed)} (a param cannot change in a run)")
    return run


def _backfill_epochs(run: Any, results_csv: Path, up_to: int) -> None:
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


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisError(f"{path} not found: run the metadata stage first (`dvc repro metadata`)") from None
    except ValueError as exc:
        raise VisError(f"{path} is not JSON ({exc}): rerun the metadata stage (`dvc repro -f metadata`)") from None
    if not metadata.get("fingerprint"):
        raise VisError(f"{path} has no dataset fingerprint: rerun the metadata stage (`dvc repro -f metadata`)")
    return metadata


def _plan(params: Params, ckpt_dir: Path) -> tuple[str, dict[str, Any], int | None]:
    """(mode, state, epoch to resume after): "finalize" a trained run, "resume" an unfinished one, or "fresh"."""
    run_dir = ckpt_dir / "run"
    state = read_state(ckpt_dir) if params.train.resume == "auto" else {}
    if state.get("status") == "trained" and (run_dir / "weights" / "best.pt").is_file():
        return "finalize", state, None
    if state.get("status") == "training":
        epoch = resumable_epoch(run_dir / "weights" / "last.pt")
        if epoch:
            return "resume", state, epoch
    return "fresh", {}, None


def _write_outputs(run_dir: Path, model_dir: Path, metrics: dict[str, Any], run: Any) -> dict[str, Path]:
    """Copy the results out of the checkpoint folder into the stage's outputs (each written atomically)."""
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise VisError(f"training wrote no {best}: see Ultralytics' log above")
    with atomic_path(model_dir / "weights") as tmp:
        tmp.mkdir(parents=True)
        shutil.copyfile(best, tmp / "best.pt")
    write_json(model_dir / "metrics.json", metrics)
    columns, rows = clean_results((run_dir / "results.csv").read_text(encoding="utf-8"))
    write_text(model_dir / "results.csv", format_results(columns, rows))
    with atomic_path(model_dir / "plots") as tmp:
        tmp.mkdir(parents=True)
        for image in sorted(run_dir.glob("*.png")):
            shutil.copyfile(image, tmp / image.name)
    # Which MLflow run holds this model's history: committed with dvc.lock, so a release leads back to it.
    run_info = {"run_id": run.run_id, "experiment_id": run.experiment_id} if run else {"run_id": None}
    write_json(model_dir / RUN_FILE, run_info)
    return {
        "best": model_dir / "weights" / "best.pt",
        "metrics": model_dir / "metrics.json",
        "results": model_dir / "results.csv",
        "plots": model_dir / "plots",
    }


def _finish_tracking(run: Any, outputs: dict[str, Path], metrics: dict[str, Any], inputs: list[Path]) -> None:
    run.log_metrics({key: float(value) for key, value in metrics.items()})
    run.log_artifact(outputs["best"], "weights")
    for name in ("metrics", "results", "plots"):
        run.log_artifact(outputs[name])
    for path in inputs:
        run.log_artifact(path, "data")
    run.end("FINISHED")


def train_model(params: Params, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Train (or resume) the detector, write the stage outputs, record one MLflow run; return metrics.json.

    Paths are those of `params.paths`, relative to the working directory (the repository root under DVC).
    `environ` (default: the process environment) is read for `VISAPP_CHECKPOINT_DIR`.
    """
    yolo_dir, raw_dir = Path(params.paths.yolo), Path(params.paths.raw)
    metadata_path = Path(params.paths.metadata) / METADATA_FILE
    if not (yolo_dir / "data.yaml").is_file():
        raise VisError(f"{yolo_dir / 'data.yaml'} not found: run the convert stage first (`dvc repro convert`)")
    metadata = _read_metadata(metadata_path)
    train_args(params, Path("data.yaml"), Path("run"), "cpu")  # refuse a bad train.extra before anything runs
    uri = _tracking_uri(params)  # an unreachable server fails here, before any training or folder
    key = checkpoint_key(params, metadata["fingerprint"])
    base = checkpoint_base(environ)
    ckpt_dir, run_dir = base / key, base / key / "run"

    with _exclusive(base / f"{key}.lock"):
        configure_ultralytics(ULTRALYTICS_CACHE_DIR)  # before anything imports ultralytics (checkpoints do)
        mode, state, resume_epoch = _plan(params, ckpt_dir)
        if mode == "fresh":
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            print(f"train: new training in {ckpt_dir}", flush=True)
        elif mode == "resume":
            print(f"train: resuming after epoch {resume_epoch} from {run_dir / 'weights' / 'last.pt'}", flush=True)
        else:
            print(f"train: the training in {ckpt_dir} finished before; writing its results", flush=True)
        run = _open_run(uri, params, metadata, key, state)
        try:
            state.update(key=key, mlflow_run_id=run.run_id if run else None, tracking_uri=uri if run else None)
            state.setdefault("status", "training")
            save_state(ckpt_dir, state)
            data_yaml = build_view_for(yolo_dir, raw_dir, ckpt_dir / "data")
            if mode != "finalize":
                if mode == "resume":
                    _backfill_epochs(run, run_dir / "results.csv", resume_epoch or 0)
                state["metrics"] = _fit(params, mode == "resume", data_yaml, ckpt_dir, run, state)
                state["status"] = "trained"
                save_state(ckpt_dir, state)
            outputs = _write_outputs(run_dir, Path(params.paths.model), state["metrics"], run)
            if run is not None:
                _finish_tracking(run, outputs, state["metrics"], [yolo_dir / "data.yaml", metadata_path])
        except BaseException as exc:
            if run is not None:
                with contextlib.suppress(Exception):
                    run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        state["status"] = "done"
        save_state(ckpt_dir, state)
        return state["metrics"]


def build_view_for(yolo_dir: Path, raw_dir: Path, view_dir: Path) -> Path:
    """A fresh Ultralytics dataset view of data/yolo (links to data/raw, no label cache); returns its data.yaml."""
    from visapp.dataset_view import build_view

    return Path(build_view(yolo_dir, raw_dir, view_dir, mode="link")) / "data.yaml"


def _fit(params: Params, resume: bool, data_yaml: Path, ckpt_dir: Path, run: Any, state: dict[str, Any]) -> dict:
    """Run Ultralytics' training (or its resume) in `<ckpt_dir>/run`; return the metrics.json values."""
    import torch

    run_dir = ckpt_dir / "run"
    device = resolve_device(params.train.device, torch.cuda.is_available())
    model = _build_model(params, run_dir / "weights" / "last.pt" if resume else None, ULTRALYTICS_CACHE_DIR / "weights")
    logger = _EpochLogger(run, ckpt_dir, state)
    model.add_callback("on_pretrain_routine_start", _drop_foreign_callbacks)
    model.add_callback("on_fit_epoch_end", logger)
    args = train_args(params, data_yaml.resolve(), run_dir.resolve(), device)
    if resume:
        # Ultralytics takes the other arguments from the checkpoint; these may differ on another machine.
        args = {name: args[name] for name in ("data", "device", "workers", "save_dir")} | {"resume": True}
    model.train(**args)
    validator = getattr(model.trainer, "validator", None)
    results = getattr(getattr(validator, "metrics", None), "results_dict", None) or model.trainer.metrics or {}
    _, rows = clean_results((run_dir / "results.csv").read_text(encoding="utf-8"))
    state["train_seconds"] = round(logger.seconds(), 1)
    return final_metrics(dict(results), len(rows), logger.seconds())
