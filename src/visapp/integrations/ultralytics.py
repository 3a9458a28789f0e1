"""Ultralytics (and torch under it): configured for one training at a time, and put back as it was afterwards.

`session()` is the only way the library runs Ultralytics. For the time it is open:

- `YOLO_OFFLINE` and `YOLO_AUTOINSTALL=false` are set (unless the user set them): nothing is downloaded or
  pip-installed behind the user's back, and nothing hangs waiting for a network that is not there;
- Ultralytics' settings are changed in memory only: analytics and every integration off (we drive MLflow
  ourselves, and its own MLflow callback would open a second run), weights and runs under our cache. Its
  settings file (`settings.json` in the user's config folder) is never read or written: when this process is
  the first to import Ultralytics, `YOLO_CONFIG_DIR` points that import at a folder of our cache (whatever
  the user set), so not even a missing file is created in the user's folder; when the user's own code
  imported it first, the changes are made in memory and undone afterwards;
- the fonts its plots ask for (Arial, which it would download) are matplotlib's bundled DejaVu Sans;
- without `verbose`, its logger is raised to warnings: no argument dump, no layer table, no progress bars
  (which fill a log that is not a terminal with escape sequences); the caller reports epochs itself.

Every module global it touches is restored when the session closes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR_ENV = "YOLO_CONFIG_DIR"
VERBOSE_ENV = "YOLO_VERBOSE"
SWITCHES = {"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"}
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
# Modules that bound `check_font` at import; each gets the local font for the session.
_FONT_USERS = ("ultralytics.utils.checks", "ultralytics.utils.plotting", "ultralytics.data.utils")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set the variables the user has not set; restore the environment afterwards."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _import(cache_dir: Path, verbose: bool) -> Any:
    """Import Ultralytics; a first import reads and writes its settings in our cache, not the user's folder.

    Quiet (`YOLO_VERBOSE=false`, unless the user set it) when not verbose: its first import announces the
    settings file it creates.
    """
    if "ultralytics" in sys.modules:
        import ultralytics.utils

        return ultralytics.utils
    config = cache_dir / "config"
    config.mkdir(parents=True, exist_ok=True)
    saved = os.environ.get(CONFIG_DIR_ENV)
    os.environ[CONFIG_DIR_ENV] = str(config)
    try:
        with _environment({} if verbose else {VERBOSE_ENV: "false"}):
            import ultralytics.utils
    finally:
        if saved is None:
            os.environ.pop(CONFIG_DIR_ENV, None)
        else:
            os.environ[CONFIG_DIR_ENV] = saved
    return ultralytics.utils


def _local_font() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@contextlib.contextmanager
def _patched(targets: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set module attributes for the session; put the old values back afterwards."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in targets if hasattr(module, name)]
    for module, name, value in targets:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


@contextlib.contextmanager
def session(cache_dir: Path, verbose: bool = False) -> Iterator[None]:
    """Run Ultralytics inside this context (see the module docstring); nothing of it outlives the context."""
    import importlib

    cache_dir = cache_dir.resolve()
    with _environment(SWITCHES):
        utils = _import(cache_dir, verbose)
        settings = utils.SETTINGS
        saved_settings = dict(settings)
        weights_dir = cache_dir / "weights"
        wanted = {**INTEGRATIONS_OFF, "weights_dir": str(weights_dir), "runs_dir": str(cache_dir / "runs")}
        dict.update(settings, wanted)  # in memory: SettingsManager.update would save the user's file
        font = _local_font()
        targets: list[tuple[Any, str, Any]] = [(utils, "WEIGHTS_DIR", weights_dir)]
        for name in _FONT_USERS:
            targets.append((importlib.import_module(name), "check_font", lambda *args, **kwargs: font))
        logger = utils.LOGGER
        level = logger.level
        try:
            with _patched(targets):
                if not verbose:
                    logger.setLevel(logging.WARNING)
                yield
        finally:
            logger.setLevel(level)
            dict.clear(settings)
            dict.update(settings, saved_settings)


def cuda_available() -> bool:
    """Whether torch sees a usable CUDA device."""
    return cuda_device_count() > 0


def cuda_device_count() -> int:
    """How many CUDA devices torch can use (0 with a CPU-only torch)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Checkpoint:
    """What an Ultralytics `last.pt` holds for a resume.

    `kind` is "resumable" (then `epoch`, 1-based, is the last epoch it finished), "absent", "finished" (its final
    epoch is in it: nothing is left to train), "truncated" (cut short by a kill while it was written: worthless)
    or "incompatible" (complete, but this torch or Ultralytics cannot load it, e.g. after an upgrade: keep it,
    an older environment can still resume it). `why` says it in words, naming the file.
    """

    kind: str
    why: str
    epoch: int | None = None


def read_checkpoint(last_pt: Path) -> Checkpoint:
    """Whether and from which epoch an Ultralytics checkpoint can be resumed, and if not, why.

    A finished training's last.pt is stripped (epoch -1, no optimizer). One that saved its final epoch but
    was stopped before stripping cannot be resumed either (Ultralytics refuses: nothing left to train).
    """
    if not last_pt.is_file():
        return Checkpoint("absent", f"there is no {last_pt} (the training stopped before its first epoch ended)")
    import torch

    try:
        ckpt = torch.load(last_pt, map_location="cpu", weights_only=False)
    except Exception as exc:  # any failure to load: told apart below, never swallowed
        if not zipfile.is_zipfile(last_pt):  # torch writes a ZIP, its directory last: a cut-short file has none
            return Checkpoint("truncated", f"{last_pt} is cut short (the training was killed while writing it)")
        return Checkpoint(
            "incompatible",
            f"{last_pt} is complete, but this torch {torch.__version__} cannot load it "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}); "
            "it was written by another torch or Ultralytics",
        )
    if not isinstance(ckpt, dict):
        return Checkpoint("incompatible", f"{last_pt} holds a {type(ckpt).__name__}, not an Ultralytics checkpoint")
    epoch = ckpt.get("epoch", -1)
    total = (ckpt.get("train_args") or {}).get("epochs", 0)
    if epoch is None or epoch < 0 or ckpt.get("optimizer") is None or epoch + 1 >= total:
        return Checkpoint("finished", f"{last_pt} holds a finished training: nothing is left to resume")
    return Checkpoint("resumable", f"{last_pt} ends with epoch {epoch + 1} of {total}", epoch + 1)


def checkpoint_epoch(last_pt: Path) -> int | None:
    """The epoch (1-based) an unfinished Ultralytics checkpoint ends with, or None (`read_checkpoint` says why)."""
    return read_checkpoint(last_pt).epoch


def drop_foreign_callbacks(trainer: Any) -> None:
    """Remove integration and analytics callbacks Ultralytics added, whatever its settings say.

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


def epoch_values(trainer: Any) -> dict[str, float]:
    """What Ultralytics writes as one results.csv row (losses, metrics, learning rates), with its own names."""
    values: dict[str, Any] = {}
    if trainer.tloss is not None:
        values.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
    values.update(trainer.metrics or {})
    values.update(getattr(trainer, "lr", None) or {})
    return {key: float(value) for key, value in values.items()}


def load_model(arch: str, weights: Path | None, checkpoint: Path | None) -> Any:
    """A YOLO model: from a resumable checkpoint, else from the architecture (+ weights when given).

    Raises what Ultralytics raises for weights it cannot load (the caller says how to fix it).
    """
    from ultralytics.models import YOLO

    if checkpoint is not None:
        return YOLO(str(checkpoint))
    model = YOLO(arch)
    if weights is not None:
        model.load(str(weights))
    return model


def fit(
    model: Any, args: dict[str, Any], on_epoch: Callable[[Any], None], on_start: Callable[[Any], None] | None = None
) -> dict[str, float]:
    """Train with our callbacks (`on_start` once the data is loaded and the first epoch begins, `on_epoch` after
    each epoch); the final validation's metrics of best.pt (Ultralytics' names).

    With several devices Ultralytics trains in DDP subprocesses, which run its own callbacks only: `on_epoch`
    is then not called (the caller reads the epochs from results.csv) and the metrics come back empty (the
    caller validates best.pt itself, `validate`).
    """
    model.add_callback("on_pretrain_routine_start", drop_foreign_callbacks)
    model.add_callback("on_fit_epoch_end", on_epoch)
    if on_start is not None:
        model.add_callback("on_train_start", on_start)
    model.train(**args)
    validator = getattr(model.trainer, "validator", None)
    results = getattr(getattr(validator, "metrics", None), "results_dict", None) or model.trainer.metrics or {}
    return {key: float(value) for key, value in dict(results).items()}


def validate(weights: Path, data_yaml: Path, imgsz: int, batch: int, device: str) -> dict[str, float]:
    """Validate `weights` on the val split of `data_yaml` in this process; the metrics (Ultralytics' names)."""
    from ultralytics.models import YOLO

    metrics = YOLO(str(weights)).val(data=str(data_yaml), imgsz=imgsz, batch=batch, device=device, plots=False)
    return {key: float(value) for key, value in dict(metrics.results_dict).items()}


@dataclass
class SplitMetrics:
    """What Ultralytics' validation measured on one split: overall, per class (by id), and its speed."""

    overall: dict[str, float]  # precision, recall, mAP50, mAP50-95
    per_class: dict[int, dict[str, float]]  # class id -> the same four (classes without objects: absent)
    objects: dict[int, int]  # class id -> objects of it in the split
    images: dict[int, int]  # class id -> images holding it
    speed_ms: dict[str, float]  # per image: preprocess, inference, postprocess
    plots: Path  # the folder of its figures (confusion matrix, PR curve, ...)


def validate_split(
    weights: Path, data_yaml: Path, split: str, imgsz: int, batch: int, device: str, save_dir: Path, plots: bool
) -> SplitMetrics:
    """Validate `weights` on `split` of `data_yaml` (in a session); its figures go to `save_dir`."""
    from ultralytics.models import YOLO

    found = YOLO(str(weights)).val(
        data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device, plots=plots,
        project=str(save_dir.parent), name=save_dir.name, exist_ok=True, verbose=False,
    )  # fmt: skip
    box = found.box
    per_class = {}
    for index, class_id in enumerate(box.ap_class_index):
        precision, recall, ap50, ap = box.class_result(index)
        per_class[int(class_id)] = {
            "precision": float(precision),
            "recall": float(recall),
            "mAP50": float(ap50),
            "mAP50-95": float(ap),
        }
    counts = getattr(found, "nt_per_class", None)
    holding = getattr(found, "nt_per_image", None)
    return SplitMetrics(
        overall={
            "precision": float(box.mp),
            "recall": float(box.mr),
            "mAP50": float(box.map50),
            "mAP50-95": float(box.map),
        },
        per_class=per_class,
        objects={i: int(n) for i, n in enumerate(counts)} if counts is not None else {},
        images={i: int(n) for i, n in enumerate(holding)} if holding is not None else {},
        speed_ms={key: float(value) for key, value in dict(found.speed).items() if key != "loss"},
        plots=Path(found.save_dir),
    )


@dataclass
class Detections:
    """One image's predicted boxes, in the pixels of the image as Ultralytics reads it (EXIF orientation applied)."""

    xyxy: Any  # (n, 4) float array
    confidence: Any  # (n,) float array
    class_id: Any  # (n,) int array
    size: tuple[int, int]  # (width, height) of that image


def predict(
    weights: Path, images: list[Path], imgsz: int, confidence: float, device: str, agnostic: bool = False
) -> Iterator[Detections]:
    """`weights`' boxes on each image (in a session), down to `confidence`, one image at a time; `agnostic`: one
    box per place, whatever its class (non-maximum suppression across classes)."""
    from ultralytics.models import YOLO

    model = YOLO(str(weights))
    for image in images:
        (result,) = model.predict(
            str(image), imgsz=imgsz, conf=confidence, device=device, verbose=False, agnostic_nms=agnostic
        )
        yield _detections(result)


def export_onnx(weights: Path, imgsz: int) -> Path:
    """Ultralytics' own ONNX export of `weights` (in a session), at a fixed `imgsz`, beside them; the file."""
    from ultralytics.models import YOLO

    return Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, device="cpu", verbose=False))


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, the runtime it predicts with, and the image size it was made for."""

    model: Any
    runtime: str  # "onnxruntime" (an .onnx file) or "pytorch" (a .pt)
    imgsz: int  # the training's (.pt) or the export's (.onnx) image size: what it predicts best at


def load(weights: Path) -> LoadedModel:
    """Load `weights` to predict: a `.pt` runs on PyTorch, an `.onnx` on ONNX Runtime (on the CPU)."""
    import ast

    from ultralytics.models import YOLO

    model = YOLO(str(weights), task="detect")
    if Path(weights).suffix == ".onnx":
        import onnxruntime

        meta = onnxruntime.InferenceSession(str(weights), providers=["CPUExecutionProvider"]).get_modelmeta()
        size = ast.literal_eval(meta.custom_metadata_map.get("imgsz", "[640]"))
        return LoadedModel(model, "onnxruntime", int(max(size) if isinstance(size, list | tuple) else size))
    args = (getattr(model, "ckpt", None) or {}).get("train_args") or {}
    size = args.get("imgsz") or 640
    return LoadedModel(model, "pytorch", int(max(size) if isinstance(size, list | tuple) else size))


def detect(loaded: LoadedModel, image: Any, confidence: float, imgsz: int | None = None) -> Detections:
    """A loaded model's boxes on one image (a path: read as training reads it, EXIF orientation applied), at its
    own image size unless `imgsz` is given."""
    (result,) = loaded.model.predict(image, imgsz=imgsz or loaded.imgsz, conf=confidence, device="cpu", verbose=False)
    return _detections(result)


def _detections(result: Any) -> Detections:
    boxes = result.boxes
    height, width = result.orig_shape[:2]
    xyxy, conf, cls = (boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy())
    return Detections(xyxy, conf, cls.astype(int), (int(width), int(height)))


# ---------------------------------------------------------------- its argument list, read without importing it


def _package_file(*parts: str) -> Path:
    """A file of the installed Ultralytics package, found without importing it (an import loads torch)."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("ultralytics is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


@functools.cache
def argument_defaults() -> dict[str, Any]:
    """Every argument Ultralytics knows and its default: its own declaration, `cfg/default.yaml`."""
    import yaml

    return dict(yaml.safe_load(_package_file("cfg", "default.yaml").read_text(encoding="utf-8")))


@functools.cache
def _typed_keys() -> dict[str, frozenset[str]]:
    """Ultralytics' own lists of which arguments are numbers, fractions, integers and booleans
    (`CFG_FLOAT_KEYS`, ... in `ultralytics/cfg/__init__.py`), read from its source as literals; empty when a
    release writes them otherwise (then only the names are checked)."""
    import ast

    wanted = {"CFG_FLOAT_KEYS": "number", "CFG_FRACTION_KEYS": "fraction", "CFG_INT_KEYS": "int",
              "CFG_BOOL_KEYS": "bool"}  # fmt: skip
    found: dict[str, frozenset[str]] = {}
    try:
        tree = ast.parse(_package_file("cfg", "__init__.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                kind = wanted.get(node.targets[0].id)
                value = node.value
                if kind and isinstance(value, ast.Call) and value.args:  # frozenset({...})
                    found[kind] = frozenset(ast.literal_eval(value.args[0]))
    except (OSError, SyntaxError, ValueError):
        return {}
    return found


def argument_problem(name: str, value: Any) -> str | None:
    """Why Ultralytics would refuse `name=value` as a train argument (an unknown name, or a value of the wrong
    type or range by its own lists), or None. Values it takes in several forms are left to it."""
    known = argument_defaults()
    if name not in known:
        import difflib

        near = difflib.get_close_matches(name, list(known), n=1)
        return f"Ultralytics has no argument {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
    if value is None:
        return None
    kinds = [kind for kind, names in _typed_keys().items() if name in names]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if "bool" in kinds and not isinstance(value, bool):
        return f"{name} must be true or false, not {value!r}"
    if "int" in kinds and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"{name} must be a whole number, not {value!r}"
    if ("number" in kinds or "fraction" in kinds) and not number:
        return f"{name} must be a number, not {value!r}"
    if "fraction" in kinds and name != "fraction" and not 0.0 <= value <= 1.0:
        return f"{name} must be between 0 and 1, not {value!r}"
    return None
