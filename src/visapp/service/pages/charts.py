"""A training's epochs -> the geometry of two small line charts (losses; precision, recall and mAP), drawn as SVG
by the job's page. The x axis spans every epoch asked for, so the lines grow to the right while it trains."""

from __future__ import annotations

from dataclasses import dataclass, field

from visapp.service.records import Attempt, EpochMetrics

WIDTH, HEIGHT = 480, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 36  # margins: room for the tick labels
# Colours of at least 4.5:1 on white, each line with its own dash pattern too (never colour alone).
SERIES = {
    "Losses": (("box_loss", "#0b5cad", ""), ("cls_loss", "#b3261e", "6 3")),
    "Precision, recall and mAP": (
        ("mAP50", "#1b6b2f", ""),
        ("mAP50-95", "#6b3fa0", "6 3"),
        ("precision", "#8a4b00", "2 3"),
        ("recall", "#0b5cad", "10 3 2 3"),
    ),
}


@dataclass
class Line:
    """A series of a chart: its name, colour and dash pattern, its points in the chart's pixels."""

    name: str
    colour: str
    dash: str
    points: str  # "x,y x,y ..." in the chart's pixels
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Chart:
    """One chart: its title, its lines, its axes' ticks (position, label) and its plotting area."""

    title: str
    lines: list[Line]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM
    right: int = WIDTH - RIGHT
    top: int = TOP


def curve(attempts: list[Attempt], training: int) -> list[EpochMetrics]:
    """The epochs of one training, across its attempts (a resumed attempt's epoch replaces an earlier one's)."""
    by_epoch: dict[int, EpochMetrics] = {}
    for attempt in attempts:
        if attempt.training == training:
            by_epoch.update({point.epoch: point for point in attempt.epoch_metrics})
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _ticks(high: float, count: int = 4) -> list[float]:
    return [high * index / count for index in range(count + 1)]


def charts(points: list[EpochMetrics], epochs: int | None) -> list[Chart]:
    """The two charts of a training's epochs so far; `epochs`: how many it will train (the x axis' end)."""
    if not points:
        return []
    last = max(epochs or 0, points[-1].epoch, 2)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(epoch: float) -> float:
        return round(LEFT + (epoch - 1) / (last - 1) * inner_w, 1)

    step = max(1, round((last - 1) / 5))
    x_ticks = [(x(epoch), str(epoch)) for epoch in range(1, last + 1, step)]
    made = []
    for title, series in SERIES.items():
        shown = [s for s in series if any(s[0] in p.metrics for p in points)]
        if not shown:
            continue
        values = [p.metrics[name] for p in points for name, _, _ in shown if name in p.metrics]
        high = 1.0 if title != "Losses" else max(max(values) * 1.1, 1e-6)

        def y(value: float, high: float = high) -> float:
            return round(TOP + (1 - value / high) * inner_h, 1)

        lines = []
        for name, colour, dash in shown:
            dots = [(x(p.epoch), y(p.metrics[name])) for p in points if name in p.metrics]
            lines.append(Line(name, colour, dash, " ".join(f"{a},{b}" for a, b in dots), dots))
        y_ticks = [(y(value), f"{value:.2g}" if title == "Losses" else f"{value:.2f}") for value in _ticks(high)]
        made.append(Chart(title, lines, x_ticks, y_ticks))
    return made
