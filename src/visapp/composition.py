"""conf/ <-> params.yaml: compose conf/ with Hydra, say where the two disagree, and write params.yaml back into conf/.

conf/ is authored, params.yaml is its composition (`make params`; DVC itself on `dvc exp run`). They drift
apart by four ordinary routes: conf/ edited without recomposing (then `dvc repro` runs the old values), a
hand edit of params.yaml (which the next `dvc exp run` drops), `dvc exp apply` (which writes an experiment's
params.yaml and leaves conf/ as it was), and a commit of either alone. `drift` names the keys that differ;
the params stage, `visapp release` and the pre-commit hook refuse to go on with a drift, and `sync` writes
params.yaml's values back into the conf/ files they come from (switching a group's option when another
option gives the whole section), so that composing conf/ gives params.yaml again.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from visapp.config import CONF_DIR, PARAMS_FILE, ConfigError, Params, flatten, read_params_file, to_params, to_plain
from visapp.integrations.dvc_env import experiment_name

CONF_DIR_ENV = "VISAPP_CONF_DIR"
CONFIG_NAME = "config"


def conf_dir() -> Path:
    """The Hydra config folder: `$VISAPP_CONF_DIR`, else `conf/` here, else the `conf/` of this checkout."""
    if os.environ.get(CONF_DIR_ENV):
        return Path(os.environ[CONF_DIR_ENV])
    if CONF_DIR.is_dir():
        return CONF_DIR
    source_checkout = Path(__file__).resolve().parents[2] / "conf"  # src/visapp/composition.py -> <checkout>/conf
    if source_checkout.is_dir():
        return source_checkout
    raise ConfigError(f"no conf/ folder here: run from the repository root, or set {CONF_DIR_ENV}")


def compose(conf: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ with Hydra, as `dvc exp run` does, into a plain mapping."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    folder = Path(conf) if conf is not None else conf_dir()
    try:
        with initialize_config_dir(config_dir=str(folder.resolve()), version_base=None):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides or [])
    except HydraException as exc:
        raise ConfigError(f"cannot compose {folder}: {str(exc).splitlines()[0]}") from None
    return to_plain(cfg, resolve=True)


def to_yaml(params: dict[str, Any]) -> str:
    """A params mapping as params.yaml text, exactly as `dvc exp run` writes it."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(params))


def compose_params_yaml(conf: str | Path | None = None, overrides: list[str] | None = None) -> str:
    """Compose conf/ and render it exactly as `dvc exp run` writes params.yaml."""
    return to_yaml(compose(conf, overrides))


@lru_cache(maxsize=4)
def _composed_defaults(folder: str) -> dict[str, Any]:
    return compose(folder)


def default_params(conf: str | Path | None = None) -> Params:
    """The params conf/ composes to, checked: the defaults of every key."""
    folder = str((Path(conf) if conf is not None else conf_dir()).resolve())
    return to_params(copy.deepcopy(_composed_defaults(folder)))


def applicable_raw(root: str | Path = ".") -> dict[str, Any]:
    """The params that apply in `root`, as a plain mapping: its params.yaml when there is one (what the pipeline
    runs with), else the composition of conf/ (a folder outside a project, the service's image)."""
    path = Path(root) / PARAMS_FILE
    return read_params_file(path) if path.is_file() else copy.deepcopy(_composed_defaults(str(conf_dir().resolve())))


def applicable_params(root: str | Path = ".", changes: dict[str, Any] | None = None) -> Params:
    """The params that apply in `root` (`applicable_raw`), with a face's own `changes` merged over them section by
    section (`{"data": {"classes": [...]}}`), checked as the pipeline checks params.yaml: every face (the command
    line, the service, doctor, the dataset diff) asks this one function."""
    raw = applicable_raw(root)
    for section, values in (changes or {}).items():
        raw[section] = {**(raw.get(section) or {}), **values} if isinstance(values, dict) else values
    return to_params(raw)


@dataclass(frozen=True)
class Difference:
    """A dotted key whose value differs between params.yaml and conf/ (`MISSING` where one of them lacks it)."""

    key: str
    in_params: Any  # `MISSING` when params.yaml lacks the key
    in_conf: Any


MISSING = "<absent>"


def diff(params: dict[str, Any], composed: dict[str, Any]) -> list[Difference]:
    """The dotted keys whose values differ between two params mappings, sorted."""
    left, right = flatten(params), flatten(composed)
    return [
        Difference(key, left.get(key, MISSING), right.get(key, MISSING))
        for key in sorted(set(left) | set(right))
        if left.get(key, MISSING) != right.get(key, MISSING)
    ]


def drift(params_file: str | Path = PARAMS_FILE, conf: str | Path | None = None) -> list[Difference]:
    """Where params.yaml disagrees with the composition of conf/ (empty: they agree)."""
    return diff(read_params_file(params_file), compose(conf))


def in_experiment(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs for `dvc exp run` (which composes params.yaml from conf/ and its -S overrides)."""
    return experiment_name(environ) is not None


def describe(differences: list[Difference], limit: int = 6) -> str:
    """The first `limit` differences in words, and how many more there are."""
    shown = ", ".join(f"{d.key}: {d.in_params!r} in params.yaml, {d.in_conf!r} from conf/" for d in differences[:limit])
    return shown + (f" and {len(differences) - limit} more" if len(differences) > limit else "")


FIX = (
    "after editing conf/, run `make params`; after `dvc exp apply` (or a hand edit of params.yaml), run "
    "`visapp params sync` to write its values into conf/; then commit both. params.yaml is composed from conf/: "
    "`dvc exp run` recomposes it and drops hand edits"
)


def drift_error(differences: list[Difference], when: str) -> ConfigError:
    """The error that stops `when` (a stage, a release) because params.yaml and conf/ differ, with the fix."""
    return ConfigError(f"{when}: params.yaml disagrees with conf/ ({describe(differences)}); {FIX}")


# ---------------------------------------------------------------- params.yaml -> conf/


def _defaults(conf: Path) -> dict[str, str]:
    """The groups of conf/config.yaml's defaults list and their options: {"train": "cpu_small", ...}."""
    import yaml

    text = (conf / f"{CONFIG_NAME}.yaml").read_text(encoding="utf-8")
    entries = (yaml.safe_load(text) or {}).get("defaults") or []
    return {key: value for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def _yaml_io() -> Any:
    from ruamel.yaml import YAML

    handler = YAML()  # round trip: comments, order and quoting of the files are kept
    handler.preserve_quotes = True
    handler.width = 4096
    return handler


def _set_in_file(path: Path, keys: list[str], value: Any) -> bool:
    """Set a (nested) key in a YAML file, keeping its comments; False when the file holds an interpolation there."""
    handler = _yaml_io()
    data = handler.load(path.read_text(encoding="utf-8")) or {}
    node = data
    for key in keys[:-1]:
        if key not in node or not isinstance(node[key], dict):
            node[key] = {}
        node = node[key]
    current = node.get(keys[-1]) if isinstance(node, dict) else None
    if isinstance(current, str) and "${" in current:
        return False  # interpolated (e.g. train.seed: ${seed}): it follows its source
    if value is MISSING:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = copy.deepcopy(value)
    with path.open("w", encoding="utf-8") as handle:
        handler.dump(data, handle)
    return True


def _switch_option(conf: Path, group: str, option: str) -> None:
    path = conf / f"{CONFIG_NAME}.yaml"
    handler = _yaml_io()
    data = handler.load(path.read_text(encoding="utf-8"))
    for entry in data["defaults"]:
        if isinstance(entry, dict) and group in entry:
            entry[group] = option
    with path.open("w", encoding="utf-8") as handle:
        handler.dump(data, handle)


def sync(params_file: str | Path = PARAMS_FILE, conf: str | Path | None = None) -> list[str]:
    """Write params.yaml's values into conf/ so that composing conf/ gives params.yaml; what was changed.

    A group whose whole section is another option's composition switches to that option (`model: yolov8s`);
    any other value is written into the file it comes from (the group's option file, or config.yaml), keeping
    comments. Interpolated values (`seed: ${seed}`) are left to follow their source.

    Raises:
        ConfigError: params.yaml holds a value conf/ cannot produce (the keys are named).
    """
    folder = Path(conf) if conf is not None else conf_dir()
    target = read_params_file(params_file)
    changes: list[str] = []
    groups = _defaults(folder)
    composed = compose(folder)
    for group, option in sorted(groups.items()):
        if composed.get(group) == target.get(group):
            continue
        for candidate in sorted(p.stem for p in (folder / group).glob("*.yaml")):
            if candidate != option and compose(folder, [f"{group}={candidate}"]).get(group) == target.get(group):
                _switch_option(folder, group, candidate)
                changes.append(f"{CONFIG_NAME}.yaml: {group}: {option} -> {candidate}")
                groups[group] = candidate
                break
    for _ in range(3):  # interpolations settle in a round or two
        differences = diff(target, compose(folder))
        if not differences:
            break
        for difference in differences:
            section, *rest = difference.key.split(".")
            if section in groups and rest:
                path, keys = folder / section / f"{groups[section]}.yaml", rest
            else:
                path, keys = folder / f"{CONFIG_NAME}.yaml", difference.key.split(".")
            if _set_in_file(path, keys, difference.in_params):
                changes.append(f"{path.relative_to(folder)}: {'.'.join(keys)} = {difference.in_params!r}")
    left = diff(target, compose(folder))
    if left:
        raise ConfigError(f"conf/ cannot give these values of params.yaml: {describe(left)}; edit conf/ by hand")
    return changes
