"""A job's params: composed once, at the request, from the deployed conf/ and what the client asked for.

The upload composes the dataset's params (conf/ + its classes + its `on_error`); a training request composes the
training's (the dataset's + its `train.*` overrides, merged key by key, `train.extra` too). Each is checked whole
when it is composed, as the pipeline checks params.yaml (`visapp.config.to_params`: every key, type and range;
`train.extra` against Ultralytics' own argument list), and stored whole in the job record. The check, the worker
and the trainer read them from the record and never compose again: a conf/ deployed in between cannot change a
job that was accepted.

The overrides a client may send are TrainConfig's fields, each optional, with its type and range
(`TrainOverrides`): the API's schema is derived from the same declaration the pipeline loads params with.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from visapp.composition import applicable_params
from visapp.config import OnError, Params, TrainConfig, params_dict, to_params

# Where each data stage reads and writes, in a job's scratch folder (`with_paths`).
RAW, VALIDATED, YOLO, METADATA, MODEL = "raw", "validated", "yolo", "metadata", "model"
THUMBNAILS = "thumbnails"  # the job's, beside them: the samples its report names, drawn (`dataset.thumbnails`)


def _overrides_model() -> type[BaseModel]:
    """A pydantic model of TrainConfig with every field optional: the body of a training request."""
    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        low, high, above = field.metadata.get("range", (None, None, False))
        bounds: dict[str, Any] = {}
        if low is not None:
            bounds["gt" if above else "ge"] = low
        if high is not None:
            bounds["le"] = high
        fields[field.name] = (hints[field.name] | None, Field(None, **bounds))
    fields["extra"] = (
        dict[str, Any] | None,
        Field(None, description="other Ultralytics train arguments, merged key by key over conf/'s"),
    )
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"epochs": 1, "imgsz": 320}]})
    return create_model("TrainOverrides", __config__=config, **fields)


if TYPE_CHECKING:
    TrainOverrides = BaseModel  # made at import from TrainConfig: to the type checker, a pydantic model
else:
    TrainOverrides = _overrides_model()
OVERRIDE_KEYS = tuple(field.name for field in dataclasses.fields(TrainConfig))


def nearest_key(name: str) -> str:
    """ " (did you mean 'epochs'?)" for a misspelt override, or ""."""
    near = difflib.get_close_matches(name, OVERRIDE_KEYS, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def dataset_params(classes: list[str] | None, on_error: OnError) -> dict[str, Any]:
    """The params that apply where the service runs (`applicable_params`: the deployed params.yaml, else conf/)
    with the upload's classes and `on_error`, checked when classes are given (without them,
    `data.classes` stays empty until the check fills it from the annotations: `with_classes`).

    Raises:
        ConfigError: a class list the pipeline would refuse too (blank or repeated names).
    """
    raw = params_dict(applicable_params("."))
    raw["data"] = {**raw["data"], "classes": list(classes or []), "on_error": str(OnError(on_error))}
    if classes:
        to_params(raw)
    return raw


def with_classes(raw: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """`raw` with `data.classes` set, checked (an empty list is refused, as in the pipeline)."""
    filled = copy.deepcopy(raw)
    filled["data"]["classes"] = list(classes)
    to_params(filled)
    return filled


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def training_params(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The dataset's params with `train.*` overrides merged over them, key by key (`extra` too), checked.

    Raises:
        ConfigError: a type or range the pipeline would refuse.
        VisError: a `train.extra` key Ultralytics does not know, a value it would refuse, or one visapp sets itself.
    """
    from visapp.training.run import check_extra

    composed = copy.deepcopy(raw)
    composed["train"] = _merge(composed["train"], overrides)
    params = to_params(composed)
    check_extra(params.train.extra)
    return composed


def with_paths(raw: dict[str, Any], scratch: Path) -> Params:
    """Checked params whose paths all lie in a job's scratch folder."""
    located = copy.deepcopy(raw)
    names = {"raw": RAW, "validated": VALIDATED, "yolo": YOLO, "metadata": METADATA, "model": MODEL}
    located["paths"] = {**located["paths"], **{key: str(scratch / name) for key, name in names.items()}}
    located["paths"]["checked"] = str(scratch / "params.checked")
    return to_params(located)
