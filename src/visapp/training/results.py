"""Ultralytics' numbers -> ours: column names, results.csv cleaned (one row per epoch), metrics.json values."""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any

METRICS_FILE = "metrics.json"
Metrics = dict[str, float | int]  # metrics.json: FINAL_METRICS' names, then epochs and train_seconds
RESULTS_FILE = "results.csv"
# The metrics.json keys and the Ultralytics keys they come from.
FINAL_METRICS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "fitness": "fitness",
}
# One line per epoch in a log: the losses and the validation metrics, not the learning rates.
EPOCH_LINE_METRICS = (
    "train/box_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP50",
    "metrics/mAP50-95",
)


def metric_name(column: str) -> str:
    """Ultralytics' column name -> the name MLflow and our results.csv use: "metrics/mAP50(B)" -> "metrics/mAP50".

    MLflow refuses parentheses in names; "(B)" marks box metrics, the only kind a detector has.
    """
    name = column.strip().replace("(B)", "")
    return "".join(ch if ch.isalnum() or ch in "/_-. :" else "_" for ch in name)


def named(values: dict[str, float]) -> dict[str, float]:
    """Ultralytics' names -> ours, for a whole row."""
    return {metric_name(key): value for key, value in values.items()}


def epoch_line_metrics(values: dict[str, float]) -> dict[str, float]:
    """The few numbers an epoch's log line shows, by their last name part (`mAP50`, `box_loss`)."""
    return {key.rsplit("/", 1)[-1]: values[key] for key in EPOCH_LINE_METRICS if key in values}


def clean_results(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Ultralytics' results.csv -> (columns, rows): names without padding or "(B)", one row per epoch.

    8.4 writes unpadded names, older versions padded them ("      epoch"). A training resumed from a checkpoint
    older than the last row written repeats that epoch: the later row wins. Rows are sorted by epoch.
    """
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
    """results.csv's text: the columns, then one row per epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def final_metrics(results: dict[str, Any], epochs: int, seconds: float) -> Metrics:
    """Ultralytics' validation results of best.pt -> metrics.json's values, rounded to 6 decimals."""
    metrics: Metrics = {name: round(float(results.get(key, 0.0)), 6) for name, key in FINAL_METRICS.items()}
    metrics["epochs"] = int(epochs)
    metrics["train_seconds"] = round(float(seconds), 1)
    return metrics
