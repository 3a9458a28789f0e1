"""The train form: its fields, ranges and choices read from `TrainOverrides` (the body the API checks, derived from
`visapp.config.TrainConfig`), its defaults from the job's params; what is sent back -> the overrides.

Only the fields whose value differs from the job's params become overrides, so a training's lineage names what
was asked, as a client's request would. `extra` is written as YAML (`key: value` lines).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic import ValidationError

from visapp.service.params import TrainOverrides


@dataclass(frozen=True)
class Field:
    """A control of the train form: what kind, the value shown, its range or choices, what is wrong with it."""

    name: str
    kind: str  # number, text, select, yaml
    value: str  # the job's value, as the form shows it
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is out of range
    step: str = "1"
    choices: tuple[str, ...] = ()
    error: str | None = None

    @property
    def hint(self) -> str:
        """What the field takes, in words: its range and the job's value."""
        if self.kind == "yaml":
            return "other Ultralytics train arguments, one `name: value` a line, merged key by key over these"
        if self.minimum is None and self.maximum is None:
            return f"default {self.value}" if self.value else ""
        low = "" if self.minimum is None else f"{'above' if self.above else 'from'} {self.minimum:g}"
        high = "" if self.maximum is None else f"to {self.maximum:g}" if low else f"at most {self.maximum:g}"
        return f"{' '.join(part for part in (low, high) if part)}; default {self.value}"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).strip() if value else ""
    return "" if value is None else str(value)


def train_fields(defaults: dict[str, Any], errors: dict[str, str] | None = None,
                 sent: dict[str, str] | None = None) -> list[Field]:  # fmt: skip
    """The form's fields, in TrainConfig's order: `defaults` are the job's `train` params; `sent`, when the form
    comes back with `errors`, what the person wrote."""
    errors, sent = errors or {}, sent or {}
    fields = []
    for name, info in TrainOverrides.model_fields.items():
        kind = next(a for a in typing.get_args(info.annotation) if a is not type(None))
        value = sent.get(name, _shown(defaults.get(name)))
        bounds: dict[str, Any] = {}
        for limit in info.metadata:
            if isinstance(limit, annotated_types.Ge):
                bounds["minimum"] = limit.ge
            elif isinstance(limit, annotated_types.Gt):
                bounds["minimum"], bounds["above"] = limit.gt, True
            elif isinstance(limit, annotated_types.Le):
                bounds["maximum"] = limit.le
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            field = Field(name, "select", value, choices=tuple(str(member.value) for member in kind))
        elif kind is bool:
            field = Field(name, "select", value, choices=("false", "true"))
        elif kind in (int, float):
            field = Field(name, "number", value, step="1" if kind is int else "any", **bounds)
        elif typing.get_origin(kind) is dict:
            field = Field(name, "yaml", value)
        else:
            field = Field(name, "text", value)
        fields.append(dataclasses.replace(field, error=errors.get(name)))
    return fields


def overrides_from(form: dict[str, str], defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the overrides the form asks for, checked by TrainOverrides; {field: what is wrong})."""
    asked: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in TrainOverrides.model_fields:
        text = form.get(name, "").strip()
        if name == "extra":
            try:
                extra = yaml.safe_load(text) if text else {}
            except yaml.YAMLError:
                errors[name] = "not YAML: write one `name: value` a line"
                continue
            if not isinstance(extra, dict):
                errors[name] = "write one `name: value` a line"
                continue
            changed = {key: value for key, value in extra.items() if defaults.get(name, {}).get(key) != value}
            if changed:
                asked[name] = changed
        elif text and text != _shown(defaults.get(name)):
            asked[name] = text
    try:
        checked = TrainOverrides.model_validate(asked)
    except ValidationError as exc:
        for error in exc.errors():
            where = str(error["loc"][0]) if error.get("loc") else "form"
            errors.setdefault(where, str(error["msg"]))
        return {}, errors
    return checked.model_dump(exclude_none=True, mode="json"), errors
