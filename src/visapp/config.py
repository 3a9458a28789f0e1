"""params.yaml (composed from conf/ by Hydra) -> typed, checked `Params`.

`conf/` is the one source of every value: the dataclasses below give each key its type and its allowed
range, never a default, so a key missing from params.yaml is an error that says to recompose it. DVC composes
`conf/` itself on `dvc exp run`, without importing this package, so the types are applied when params are
loaded: an unknown key is refused with the nearest known one ("did you mean train.epochs?"), a value of the
wrong type or out of range with the key and what it accepts. The stages, the CLI and the service all load
params through `to_params`, so they all apply the same checks.

Old commits' params.yaml are history, not input: the registry reads them as plain mappings
(`visapp.registry.history`), so a key added, removed or renamed since cannot make an old version unreadable.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from visapp.errors import VisError

PARAMS_FILE = Path("params.yaml")
CONF_DIR = Path("conf")


class ConfigError(VisError):
    """A params file that cannot be used: the message names the key and the fix."""


class OnError(enum.StrEnum):
    """What validate does with rejected samples."""

    fail = "fail"  # write the report, exit non-zero
    skip = "skip"  # write the manifest without them


class Resume(enum.StrEnum):
    """What training does with the checkpoint of an unfinished run of the same params and data."""

    auto = "auto"  # continue from it
    never = "never"  # start over


class Optimizer(enum.StrEnum):
    """Ultralytics' optimizers (`auto` lets it choose by the number of iterations)."""

    auto = "auto"
    SGD = "SGD"
    MuSGD = "MuSGD"
    Adam = "Adam"
    Adamax = "Adamax"
    AdamW = "AdamW"
    NAdam = "NAdam"
    RAdam = "RAdam"
    RMSprop = "RMSprop"


def _range(low: float | None = None, high: float | None = None, *, above: bool = False) -> dict[str, Any]:
    """Field metadata: the value must be >= low (> low when `above`) and <= high."""
    return {"range": (low, high, above)}


@dataclass
class PathsConfig:
    """Every path of the pipeline, declared once (`dvc.yaml` templates them): relative to the repository root."""

    checked: str
    raw: str
    validated: str
    yolo: str
    metadata: str
    model: str


@dataclass
class SplitConfig:
    """The hash split's ratios when there are no ImageSets lists; they add up to 1."""

    train: float = field(metadata=_range(0, 1))
    val: float = field(metadata=_range(0, 1))
    test: float = field(metadata=_range(0, 1))


@dataclass
class DataConfig:
    """The dataset: class names in YOLO id order, what validate does with problems, and the conversion's conventions."""

    classes: list[str]
    on_error: OnError
    allow_background: bool
    bbox_tolerance_px: float = field(metadata=_range(0))
    max_image_pixels: int = field(metadata=_range(1))
    one_based_coords: bool
    include_difficult: bool
    split: SplitConfig


@dataclass
class QualityConfig:
    """Dataset-quality checks of validate: findings are warnings, never rejections (see dataset/quality.py)."""

    enabled: bool
    box_iou: float = field(metadata=_range(0, 1, above=True))  # two boxes overlapping this much are one object
    min_box_px: float = field(metadata=_range(0))  # a box side below this at train.imgsz
    outlier_mad: float = field(metadata=_range(0, above=True))  # robust z-score (median/MAD, log scale)
    outlier_min_boxes: int = field(metadata=_range(3))  # a class needs this many boxes for the outlier check
    phash_distance: int = field(metadata=_range(0, 64))  # Hamming distance of 64-bit pHashes: near-duplicates
    dark_mean: float = field(metadata=_range(0, 255))  # mean grey level below this: too dark
    bright_mean: float = field(metadata=_range(0, 255))  # mean grey level above this: too bright
    blur_variance: float = field(metadata=_range(0))  # variance of the Laplacian below this: blurry
    max_aspect_ratio: float = field(metadata=_range(1))  # image long side / short side above this
    coords_min_boxes: int = field(metadata=_range(1))  # edge-touching boxes needed to judge the coordinate base
    min_class_objects: int = field(metadata=_range(0))  # a class with fewer objects (and more than 0) is rare
    max_imbalance: float = field(metadata=_range(1))  # most / fewest objects per class above this


@dataclass
class ModelConfig:
    """The architecture YAML, and the weights to fine-tune (None: train from scratch)."""

    arch: str
    weights: str | None


OURS = "ours"  # field metadata: a key visapp acts on itself, not an argument passed on to Ultralytics


@dataclass
class TrainConfig:
    """The training's params. Every field but those marked `OURS` is an argument of Ultralytics' `train()` of the
    same name, passed on as it is (`visapp.training.run.train_args`): adding one is a field here and a line in
    each conf/train/ option. `extra` takes any other Ultralytics argument."""

    epochs: int = field(metadata=_range(1, 100_000))
    imgsz: int = field(metadata=_range(32, 8192))
    batch: int = field(metadata=_range(-1, 4096))  # -1: Ultralytics' AutoBatch (CUDA only)
    device: str = field(metadata={OURS: True})  # `auto` is resolved to the devices present before training
    workers: int = field(metadata=_range(0, 256))
    patience: int = field(metadata=_range(0))  # 0: never stop early
    optimizer: Optimizer
    lr0: float = field(metadata=_range(0, 10, above=True))
    cos_lr: bool  # a cosine learning-rate schedule instead of a linear one
    seed: int = field(metadata=_range(0))
    resume: Resume = field(metadata={OURS: True})  # visapp's own checkpoints, not Ultralytics' `resume`
    extra: dict[str, Any] = field(metadata={OURS: True})


def train_argument_names() -> tuple[str, ...]:
    """The TrainConfig fields that are Ultralytics train arguments of the same name, in declaration order."""
    return tuple(f.name for f in fields(TrainConfig) if not f.metadata.get(OURS))


@dataclass
class TrackingConfig:
    """MLflow: the tracking URI (`MLFLOW_TRACKING_URI` wins), the experiment, and whether a training needs it."""

    uri: str | None
    experiment: str
    required: bool


@dataclass
class DiffConfig:
    """`visapp diff`'s gate: the most change between two dataset versions that passes (each 0..1)."""

    max_removed_fraction: float = field(metadata=_range(0, 1))
    max_relabelled_fraction: float = field(metadata=_range(0, 1))
    max_class_drift: float = field(metadata=_range(0, 1))
    max_box_size_drift: float = field(metadata=_range(0, 1))


@dataclass
class AuditConfig:
    """The label audit of the evaluate stage (`visapp.training.audit`): what it asks the model, what it shows."""

    confidence: float = field(metadata=_range(0, 1, above=True))  # the predictions' floor: cleanlab wants low ones
    high_confidence: float = field(metadata=_range(0, 1, above=True))  # a sure prediction: a missed box, a swap
    top: int = field(metadata=_range(0))  # the samples drawn in audit.png and printed by `visapp audit`
    folds: int = field(metadata=_range(0))  # 0: off; K >= 2: K extra trainings audit the train split too


@dataclass
class ReleaseConfig:
    """`visapp release --stage prod`'s gate: the most a candidate may lose against prod on the same test split."""

    max_drop: float = field(metadata=_range(0, 1))  # mAP50-95, absolute
    max_class_drop: float = field(metadata=_range(0, 1))  # any class's AP50-95, absolute


@dataclass
class Params:
    """Every param of params.yaml, typed and checked (`to_params`)."""

    seed: int = field(metadata=_range(0))
    paths: PathsConfig
    diff: DiffConfig
    data: DataConfig
    quality: QualityConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig
    audit: AuditConfig
    release: ReleaseConfig


# Free-form mappings: their keys are not ours to check (train.extra goes to Ultralytics as it is).
_FREE_KEYS = frozenset({"train.extra"})


@cache
def _field_types(schema: type) -> dict[str, Any]:
    """A dataclass's field types as classes (`from __future__ import annotations` leaves them as strings)."""
    import typing

    return typing.get_type_hints(schema)


def _unknown_keys(raw: object, schema: object, prefix: str = "") -> list[tuple[str, str | None]]:
    """(unknown key, nearest known key or None) for every key of `raw` that `schema` does not declare."""
    if not isinstance(raw, Mapping) or not isinstance(schema, type) or not is_dataclass(schema):
        return []
    known = _field_types(schema)
    found = []
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if name in _FREE_KEYS:
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            found.append((name, f"{prefix}{close[0]}" if close else None))
        else:
            found += _unknown_keys(value, known[key], f"{name}.")
    return found


def _check_ranges(node: Any, prefix: str = "") -> None:
    for f in fields(node):
        value, name = getattr(node, f.name), f"{prefix}{f.name}"
        if is_dataclass(value):
            _check_ranges(value, f"{name}.")
            continue
        if "range" not in f.metadata or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high, above = f.metadata["range"]
        too_low = low is not None and (value <= low if above else value < low)
        too_high = high is not None and value > high
        if too_low or too_high or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name} = {value!r} is out of range: {_describe_range(f.metadata['range'])}")


def _describe_range(bounds: tuple[float | None, float | None, bool]) -> str:
    low, high, above = bounds
    if low is not None and high is not None:
        return f"it must be {'above' if above else 'at least'} {low:g} and at most {high:g}"
    if low is not None:
        return f"it must be {'above' if above else 'at least'} {low:g}"
    return f"it must be at most {high:g}"


def _check_rules(params: Params) -> None:
    """Rules that a type or a range cannot express."""
    data = params.data
    if not data.classes:
        raise ConfigError("data.classes is empty: list the class names, in YOLO id order, in conf/data/")
    blank = [i for i, name in enumerate(data.classes) if not str(name).strip() or str(name) != str(name).strip()]
    if blank:
        raise ConfigError(f"data.classes[{blank[0]}] {data.classes[blank[0]]!r} is blank or has spaces around it")
    if len(set(data.classes)) != len(data.classes):
        twice = sorted({name for name in data.classes if data.classes.count(name) > 1})
        raise ConfigError(f"data.classes names {', '.join(twice)} more than once: each class once, in id order")
    ratios = (data.split.train, data.split.val, data.split.test)
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"data.split ratios must add up to 1, got {ratios}")
    if data.split.train <= 0 or data.split.val <= 0:
        raise ConfigError("data.split needs train > 0 and val > 0 (Ultralytics trains on one, validates on the other)")
    if params.quality.dark_mean >= params.quality.bright_mean:
        raise ConfigError(
            f"quality.dark_mean ({params.quality.dark_mean:g}) must be below quality.bright_mean "
            f"({params.quality.bright_mean:g})"
        )
    if params.train.batch == 0:
        raise ConfigError("train.batch = 0 is out of range: give a batch size of at least 1, or -1 for AutoBatch")
    if not params.tracking.experiment.strip():
        raise ConfigError("tracking.experiment is empty: name the MLflow experiment")


def to_params(raw: object) -> Params:
    """A plain mapping (or DictConfig) of every key -> checked `Params`; `ConfigError` names the key and the fix."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    plain = to_plain(raw, resolve=True) if OmegaConf.is_config(raw) else raw
    unknown = _unknown_keys(plain, Params)
    if unknown:
        key, near = unknown[0]
        hint = f": did you mean {near}?" if near else f"; the keys are those of conf/ ({_section_keys(key)})"
        raise ConfigError(f"{key} is not a param{hint}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Params), plain)
        params = OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:
        raise ConfigError(
            f"{exc.full_key} is missing from the params: recompose params.yaml from conf/ (`make params`)"
        ) from None
    except OmegaConfBaseException as exc:
        # OmegaConf names the key (full_key) and the expected type or the allowed enum values.
        message = str(exc).splitlines()[0]
        full_key = getattr(exc, "full_key", None)
        raise ConfigError(
            f"{full_key}: {message}" if full_key and full_key not in message else f"invalid params: {message}"
        ) from None
    if not isinstance(params, Params):  # it is: OmegaConf's annotation allows any container
        raise TypeError(f"OmegaConf made a {type(params).__name__} of the params, not Params")
    _check_ranges(params)
    _check_rules(params)
    return params


def _section_keys(key: str) -> str:
    """The keys of the section `key` belongs to, for a message."""
    node: Any = Params
    for part in key.split(".")[:-1]:
        hint = _field_types(node).get(part)
        if hint is None or not is_dataclass(hint):
            break
        node = hint
    return ", ".join(f.name for f in fields(node))


def to_plain(cfg: object, *, resolve: bool = False, enum_to_str: bool = False) -> dict[str, Any]:
    """An OmegaConf mapping (a `DictConfig`) -> plain dicts and lists."""
    from omegaconf import OmegaConf

    # OmegaConf annotates its result as any container; a mapping gives a dict.
    plain: object = OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=enum_to_str)
    if not isinstance(plain, dict):
        raise TypeError(f"not a mapping of params: {type(plain).__name__}")
    return plain


def params_dict(params: Params) -> dict[str, Any]:
    """Typed params -> plain values (enums as their strings), as params.yaml writes them."""
    from omegaconf import OmegaConf

    return to_plain(OmegaConf.structured(params), enum_to_str=True)


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a plain mapping (no types applied)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the repository root, or `make params` to compose it") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; recompose it from conf/ (`make params`)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a mapping of params; recompose it from conf/ (`make params`)")
    return raw


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Dotlist overrides (`data.on_error=skip`) over a plain params mapping."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.create(dict(raw)), OmegaConf.from_dotlist(list(overrides)))
    return to_plain(merged)


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Load params.yaml, apply dotlist overrides, and return checked params."""
    raw = read_params_file(path)
    return to_params(apply_overrides(raw, overrides) if overrides else raw)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: how params are logged to MLflow and shown by DVC."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
