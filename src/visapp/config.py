"""params.yaml (composed from conf/ by Hydra) -> typed, validated `Params`.

DVC composes `conf/` itself on `dvc exp run`, without importing this package, so the types live here and
are applied when a stage loads the params: `OmegaConf.structured(Params)` merged with the loaded YAML makes
a misspelt key or a wrong type fail with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp.errors import VisError

PARAMS_FILE = Path("params.yaml")
CONF_DIR = Path("conf")


class ConfigError(VisError):
    """A params file that cannot be used: the message names the key and the fix."""


@dataclass
class PathsConfig:
    raw: str = "data/raw"
    validated: str = "data/validated"
    yolo: str = "data/yolo"
    metadata: str = "data/metadata"
    model: str = "models/yolo"


@dataclass
class SplitConfig:
    train: float = 0.8
    val: float = 0.2
    test: float = 0.0


@dataclass
class DataConfig:
    classes: list[str] = field(default_factory=list)
    on_error: str = "fail"
    allow_background: bool = True
    bbox_tolerance_px: float = 2.0
    one_based_coords: bool = True
    include_difficult: bool = False
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class ModelConfig:
    arch: str = "yolov8n.yaml"
    weights: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 30
    imgsz: int = 256
    batch: int = 16
    device: str = "auto"
    workers: int = 2
    patience: int = 50
    optimizer: str = "auto"
    lr0: float = 0.01
    seed: int = 0
    resume: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "vis-yolo"
    required: bool = True


@dataclass
class Params:
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _check(params: Params) -> None:
    """Rules a type cannot express."""
    data = params.data
    if not data.classes:
        raise ConfigError("data.classes is empty: list the class names, in YOLO id order")
    if len(set(data.classes)) != len(data.classes):
        raise ConfigError(f"data.classes has duplicates: {data.classes}")
    if data.on_error not in ("fail", "skip"):
        raise ConfigError(f"data.on_error must be 'fail' or 'skip', not {data.on_error!r}")
    if data.bbox_tolerance_px < 0:
        raise ConfigError("data.bbox_tolerance_px must be >= 0")
    ratios = (data.split.train, data.split.val, data.split.test)
    if min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"data.split ratios must be >= 0 and add up to 1, got {ratios}")
    if data.split.train <= 0 or data.split.val <= 0:
        raise ConfigError("data.split needs train > 0 and val > 0 (Ultralytics trains on one, validates on the other)")
    if params.train.resume not in ("auto", "never"):
        raise ConfigError(f"train.resume must be 'auto' or 'never', not {params.train.resume!r}")


def to_params(raw: Any) -> Params:
    """Merge a plain mapping (or DictConfig) over the `Params` schema and check it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(Params)
    try:
        merged = OmegaConf.merge(schema, raw)
        params: Params = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        # OmegaConf's message already names the key (full_key) and the expected type.
        raise ConfigError(f"invalid params: {exc}".splitlines()[0] + _key_hint(exc)) from None
    _check(params)
    return params


def _key_hint(exc: Exception) -> str:
    key = getattr(exc, "full_key", None)
    return f" (key: {key})" if key else ""


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Load params.yaml, apply dotlist overrides (`data.on_error=skip`), and return typed params."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the repository root, or `make params` to compose it")
    raw = OmegaConf.load(path)
    if overrides:
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(overrides))
    return to_params(raw)


def compose_params_yaml(conf_dir: str | Path = CONF_DIR, overrides: list[str] | None = None) -> str:
    """Compose conf/ with Hydra and render it exactly as `dvc exp run` writes params.yaml."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides or [])
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: how params are logged to MLflow and shown by DVC."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def workspace_root(cwd: Path | None = None) -> Path:
    """The repository a stage works for, even when DVC runs it in a temporary copy.

    `dvc exp run --queue` / `--temp` run each experiment in a copy under `<repo>/.dvc/tmp/exps/`, deleted
    afterwards. Local state that must outlive one experiment (training checkpoints, the default SQLite MLflow
    store) belongs to `<repo>`. Returns `Path(".")` when the working directory is the repository itself.
    """
    here = (cwd or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path()
