"""DVC experiments -> a table a person can read: the experiment, the params that differ, the headline metrics.

`dvc exp show` shows every param and every metric of every file (the validation counts per code among them):
dozens of columns, of which a terminal shows a few. This keeps what a comparison needs, within a width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp.config import PARAMS_FILE, flatten, read_params_file
from visapp.integrations import dvc

# Column -> (the file, its key): the validation metrics of training (val chose best.pt) and the evaluate stage's on
# the held-out test split, side by side.
HEADLINE = {
    "mAP50-95": ("metrics.json", "mAP50-95"),
    "test mAP50-95": ("eval.json", "overall.mAP50-95"),
    "mAP50": ("metrics.json", "mAP50"),
    "test mAP50": ("eval.json", "overall.mAP50"),
    "precision": ("metrics.json", "precision"),
    "recall": ("metrics.json", "recall"),
    "epochs": ("metrics.json", "epochs"),
}


@dataclass
class ExperimentRow:
    """One experiment: its name, its params (dotted keys) and its headline metrics (None where it has none)."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]


@dataclass
class Comparison:
    """Experiments as rows: their names, the params whose values differ between them, the headline metrics."""

    names: list[str]
    params: list[str]
    metrics: list[str]
    rows: list[ExperimentRow] = field(default_factory=list)


def _metric(row: dict[str, Any], column: str) -> Any:
    """A headline metric: DVC names it by its key, or `<file>:key` when two files have the key."""
    file, name = HEADLINE[column]
    found = next((value for key, value in row.items() if key.endswith(f"{file}:{name}")), None)
    return row.get(name) if found is None else found


def compare(root: str | Path = ".") -> Comparison:
    """The experiments of HEAD (and the workspace and HEAD itself), with the params that differ between them."""
    root = Path(root)
    param_keys = set(flatten(read_params_file(root / PARAMS_FILE)))
    found = dvc.experiments(root)
    rows = []
    for entry in found:
        name = str(entry.get("Experiment") or str(entry.get("rev", ""))[:12])
        params = {key: value for key, value in entry.items() if key in param_keys}
        rows.append(ExperimentRow(name, params, {m: _metric(entry, m) for m in HEADLINE}))
    keys = sorted({key for row in rows for key in row.params})
    differing = [key for key in keys if len({repr(row.params.get(key)) for row in rows}) > 1]
    return Comparison([row.name for row in rows], differing, list(HEADLINE), rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(keys: list[str]) -> dict[str, str]:
    """The shortest unique tail of each dotted key: train.lr0 -> lr0 (unless another key ends the same)."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            tail = ".".join(parts[-size:])
            if sum(other.endswith(tail) for other in keys) == 1:
                names[key] = tail
                break
        else:
            names[key] = key
    return names


def format_comparison(comparison: Comparison, width: int = 120) -> str:
    """The table, no wider than `width`; params that do not fit are named below it."""
    if not comparison.rows:
        return "no experiments yet: `dvc exp run` (or `dvc exp run --queue` and `dvc queue start`) makes some"
    short = _short(comparison.params)
    columns = ["experiment", *[short[key] for key in comparison.params], *comparison.metrics]
    cells = [
        [
            row.name,
            *[_cell(row.params.get(key)) for key in comparison.params],
            *(_cell(row.metrics[m]) for m in comparison.metrics),
        ]
        for row in comparison.rows
    ]
    widths = [max(len(columns[i]), *(len(line[i]) for line in cells)) for i in range(len(columns))]
    keep = list(range(len(columns)))
    left_out: list[str] = []
    first_metric = 1 + len(comparison.params)
    while sum(widths[i] + 2 for i in keep) - 2 > width and first_metric - 1 > 0:
        dropped = keep.pop(first_metric - 1)  # the last param column that is still shown
        left_out.insert(0, comparison.params[dropped - 1])
        first_metric -= 1
    lines = ["  ".join(columns[i].ljust(widths[i]) for i in keep).rstrip()]
    lines += ["  ".join(line[i].ljust(widths[i]) for i in keep).rstrip() for line in cells]
    if left_out:
        lines.append(f"(also differing: {', '.join(left_out)}; `visapp experiments --json` has every value)")
    return "\n".join(line[:width] for line in lines)
