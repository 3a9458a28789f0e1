"""Plan a training run of .github/workflows/train.yml: the sweep's points and the bounds, checked, as step outputs.

Reads the workflow's inputs from the environment (never from the workflow text: no expression reaches a
shell) and writes `key=value` lines to $GITHUB_OUTPUT (stdout without it):

    points        JSON list of {"name": "p0", "overrides": "train=gpu train.lr0=0.01"}: one runner each
    max-parallel  runners at once, 1..MAX_PARALLEL_CAP
    minutes       the training's time limit: the train job's timeout and the instance's shutdown timer
    instance-type the EC2 instance type
    spot          true | false

OVERRIDES are `key=value` Hydra overrides, as `dvc exp run -S` takes them, separated by spaces or new lines.
SWEEP is a grid of `key=v1,v2,...` axes, separated the same way; each point of the grid is OVERRIDES plus one
value of every axis (the grid `dvc exp run -S 'k=v1,v2' --queue` would queue), at most MAX_POINTS points.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from pathlib import Path

MAX_POINTS = 32
MAX_PARALLEL_CAP = 8
MAX_HOURS_CAP = 24
DEFAULT_OVERRIDES = "train=gpu"
DEFAULT_INSTANCE_TYPE = "g5.xlarge"
DEFAULT_HOURS = 6

# One Hydra override: an optional +/~/++ prefix, a dotted key, and a value of plain characters (numbers,
# names, paths, lists in brackets). Quotes, spaces, `$`, `;`, backticks and the like are refused outright.
OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*(=[A-Za-z0-9_.,:/@+\-\[\]]*)?$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


class PlanError(ValueError):
    """An input that cannot be planned, with what is wrong in it."""


def split(text: str) -> list[str]:
    return text.split()


def check_override(token: str, what: str) -> str:
    if not OVERRIDE.match(token):
        raise PlanError(f"{what}: {token!r} is not a `key=value` override (letters, digits and _.,:/@+-[] only)")
    return token


def points(overrides: str, sweep: str) -> list[dict[str, str]]:
    base = [check_override(token, "overrides") for token in split(overrides)]
    axes: list[list[str]] = []
    keys: list[str] = []
    for token in split(sweep):
        check_override(token, "sweep")
        key, sep, values = token.partition("=")
        choices = [value for value in values.split(",") if value] if sep else []
        if len(choices) < 1:
            raise PlanError(f"sweep: {token!r} needs `key=v1,v2,...`")
        if key in keys:
            raise PlanError(f"sweep: {key} is given twice")
        keys.append(key)
        axes.append([f"{key}={value}" for value in choices])
    grid = list(itertools.product(*axes)) if axes else [()]
    if len(grid) > MAX_POINTS:
        raise PlanError(f"sweep: {len(grid)} points; at most {MAX_POINTS} per run (split the grid)")
    return [{"name": f"p{index}", "overrides": " ".join([*base, *point])} for index, point in enumerate(grid)]


def bounded(text: str, name: str, default: int, cap: int) -> int:
    text = text.strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise PlanError(f"{name}: {text!r} is not a whole number") from None
    if not 1 <= value <= cap:
        raise PlanError(f"{name}: {value} is out of range 1..{cap}")
    return value


def plan(env: dict[str, str]) -> dict[str, str]:
    overrides = env.get("OVERRIDES", "").strip() or DEFAULT_OVERRIDES
    instance_type = env.get("INSTANCE_TYPE", "").strip() or DEFAULT_INSTANCE_TYPE
    if not INSTANCE_TYPE.match(instance_type):
        raise PlanError(f"instance type: {instance_type!r} is not an EC2 instance type (e.g. g5.xlarge)")
    spot = env.get("SPOT", "").strip().lower()
    if spot not in ("", "true", "false"):
        raise PlanError(f"spot: {spot!r} is not true or false")
    hours = bounded(env.get("MAX_HOURS", ""), "max hours", DEFAULT_HOURS, MAX_HOURS_CAP)
    grid = points(overrides, env.get("SWEEP", ""))
    parallel = bounded(env.get("MAX_PARALLEL", ""), "max parallel", 1, MAX_PARALLEL_CAP)
    return {
        "points": json.dumps(grid, separators=(",", ":")),
        "max-parallel": str(min(parallel, len(grid))),
        "minutes": str(hours * 60),
        "instance-type": instance_type,
        "spot": "true" if spot == "true" else "false",
    }


def main() -> int:
    try:
        outputs = plan(dict(os.environ))
    except PlanError as exc:
        print(f"::error title=train plan::{exc}", file=sys.stderr)
        return 2
    lines = "".join(f"{key}={value}\n" for key, value in outputs.items())
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(lines)
    sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
