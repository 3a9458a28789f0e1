"""Dataset statistics and example images -> deterministic PNG figures (class distribution, box sizes, examples,
where the boxes lie and which split holds which class).

Deterministic bytes: matplotlib draws with its default style (a user's matplotlibrc does not leak in), on
the Agg canvas, at a fixed size and dpi, and without the "Software" PNG text (it carries the version);
the grid of examples is drawn with Pillow and its bundled default font. Nothing is downloaded.

Class names are drawn with a font that has their glyphs (`visapp.dataset.figure_fonts`); example images are
decoded within a memory budget, in the frame training sees (`visapp.dataset.figure_images`), and one that would
cost more is left out of the grid, and the log names it.
"""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visapp.dataset import figure_images, pool
from visapp.dataset.figure_fonts import class_labels, pillow_font
from visapp.errors import VisError
from visapp.formats.yolo import Box

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE_FILES = ("class_distribution.png", "box_sizes.png", "samples.png", "annotations.png", "flagged.png")
HEATMAP_BINS = 8  # cells per side of the grid of box centres (annotations.png, dataset_metadata.json)
HEATMAP_COLUMNS = 5  # class heatmaps per row in annotations.png
DPI = 100
# matplotlib's tab10 then its light tab20 partners (20 colours, for VOC's 20 classes), fixed here so that the
# grid of examples (Pillow) and the plots use the same colour per class.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
CELL = 300  # px: the longer side of each example image in the grid
COLUMNS = 4
GRID_SIZE = 12  # images in the figure of examples
log = logging.getLogger(__name__)


def class_colour(class_id: int) -> str:
    """The colour a class is drawn in (the palette repeats past its length)."""
    return PALETTE[class_id % len(PALETTE)]


# ---------------------------------------------------------------- class names: fonts with their glyphs


@dataclass(frozen=True)
class Example:
    """An image of the figure of examples: where it is, its size in the frame training sees, its YOLO boxes."""

    split: str
    id: str
    width: int
    height: int
    orientation: int
    image_path: Path
    boxes: tuple[Box, ...]
    predicted: tuple[Box, ...] = ()  # a model's boxes, drawn thin and dashed beside the labels (the label audit)


@dataclass
class BoxData:
    """Every kept box, compactly: class id, relative centre and width/height, and sqrt of its pixel area."""

    class_ids: array[int] = field(default_factory=lambda: array("i"))
    rel_cx: array[float] = field(default_factory=lambda: array("d"))
    rel_cy: array[float] = field(default_factory=lambda: array("d"))
    rel_w: array[float] = field(default_factory=lambda: array("d"))
    rel_h: array[float] = field(default_factory=lambda: array("d"))
    side_px: array[float] = field(default_factory=lambda: array("d"))

    def add(self, boxes: list[Box], width: int, height: int) -> None:
        """Add an image's boxes; its size in pixels (`width` x `height`) gives their pixel sizes."""
        for box in boxes:
            self.class_ids.append(box.class_id)
            self.rel_cx.append(box.cx)
            self.rel_cy.append(box.cy)
            self.rel_w.append(box.w)
            self.rel_h.append(box.h)
            self.side_px.append(math.sqrt(max(box.w * width * box.h * height, 0.0)))


def draw_all(drawings: Sequence[Callable[[], None]], done: Callable[[], None]) -> None:
    """Run each drawing (each writes one figure), calling `done` after each. They are independent, and each is
    single-threaded Python (layout, rendering, PNG encoding), so they run in forked processes over the cores
    when `visapp.dataset.pool` allows forking; else here, one after another (spawned processes would spend
    more importing matplotlib again than they save)."""
    workers = min(len(drawings), pool.cores())
    if workers < 2 or not pool.can_fork():
        for drawing in drawings:
            drawing()
            done()
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import matplotlib.figure  # noqa: F401  imported once, here: the forked workers inherit it

    with ProcessPoolExecutor(workers, mp_context=pool.context(fork=True)) as executor:
        for future in as_completed([executor.submit(drawing) for drawing in drawings]):
            future.result()  # a drawing's error is raised here, as it would be without the pool
            done()


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, no GUI backend; savefig renders with Agg.
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def plot_class_distribution(metadata: dict[str, Any], path: Path) -> None:
    """Objects per class and images per class (+ background images), one bar per split."""
    import matplotlib.style
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    classes = [c["name"] for c in metadata["classes"]]
    labels = class_labels(classes)
    splits = metadata["splits"]
    with matplotlib.style.context("default"), matplotlib.rc_context(labels.rc):
        fig = _new_figure(max(8.0, 1.2 * len(classes) + 3), 7.5)
        ax_objects, ax_images = fig.subplots(2, 1)
        panels: list[tuple[Axes, list[str], Callable[[dict[str, Any]], list[int]], str]] = [
            (ax_objects, list(labels.texts), lambda s: [s["objects_per_class"][c] for c in classes], "objects"),
            (
                ax_images,
                [*labels.texts, "(background)"],
                lambda s: [s["images_per_class"][c] for c in classes] + [s["background_images"]],
                "images",
            ),
        ]
        for ax, ticks, values_of, what in panels:
            x = np.arange(len(ticks))
            width = 0.8 / max(len(splits), 1)
            for i, (split, stats) in enumerate(splits.items()):
                offset = (i - (len(splits) - 1) / 2) * width
                total = stats["objects"] if what == "objects" else stats["images"]
                bars = ax.bar(
                    x + offset, values_of(stats), width, label=f"{split} ({total})", color=SPLIT_COLOURS.get(split)
                )
                ax.bar_label(bars, fontsize=8, padding=1)
            ax.set_xticks(x, ticks)
            ax.set_ylabel(what)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{what} per class and split")
            ax.margins(y=0.15)
            if splits:
                ax.legend(loc="upper right", fontsize=9)
        _save(fig, path)


def plot_box_sizes(boxes: BoxData, classes: list[str], path: Path) -> None:
    """Relative box width vs height (2-D histogram), and the pixel-size histogram with COCO's thresholds."""
    import matplotlib.style
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    labels = class_labels(classes)
    with matplotlib.style.context("default"), matplotlib.rc_context(labels.rc):
        fig = _new_figure(12.0, 5.0)
        ax_wh, ax_size = fig.subplots(1, 2)
        rel_w = np.frombuffer(boxes.rel_w, dtype=np.float64)
        rel_h = np.frombuffer(boxes.rel_h, dtype=np.float64)
        ax_wh.set_title(f"relative box size ({len(rel_w)} boxes)")
        ax_wh.set_xlabel("box width / image width")
        ax_wh.set_ylabel("box height / image height")
        ax_wh.set_xlim(0, 1)
        ax_wh.set_ylim(0, 1)
        ax_wh.set_aspect("equal")
        ax_size.set_title("box size in image pixels (before resizing to imgsz)")
        ax_size.set_xlabel("sqrt(box area) [px]")
        ax_size.set_ylabel("boxes")
        if len(rel_w) == 0:
            for ax in (ax_wh, ax_size):
                ax.text(0.5, 0.5, "no objects", ha="center", va="center", transform=ax.transAxes)
            _save(fig, path)
            return

        edges = np.linspace(0.0, 1.0, 41)
        clipped_w, clipped_h = np.clip(rel_w, 0, 1), np.clip(rel_h, 0, 1)
        *_, image = ax_wh.hist2d(clipped_w, clipped_h, bins=[edges, edges], norm=LogNorm(vmin=1), cmap="viridis")
        bar = fig.colorbar(image, ax=ax_wh, label="boxes per cell")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # counts as 1, 2, 5, 10, not 1x10^0
        bar.ax.yaxis.set_major_formatter(plain)
        bar.ax.yaxis.set_minor_formatter(plain)

        side = np.frombuffer(boxes.side_px, dtype=np.float64)
        class_ids = np.frombuffer(boxes.class_ids, dtype=np.int32)
        # Always show both COCO thresholds (32 and 96 px), whatever the range of the data.
        low = max(0.5, min(float(side.min()) / 1.2, 16.0))
        bins = np.geomspace(low, max(float(side.max()) * 1.2, 192.0), 41)
        present = [c for c in range(len(classes)) if np.any(class_ids == c)]
        ax_size.hist(
            [np.clip(side[class_ids == c], low, None) for c in present],
            bins=bins,
            stacked=True,
            color=[class_colour(c) for c in present],
            label=[labels.texts[c] for c in present],
        )
        ax_size.set_xscale("log")
        # Plain pixel numbers on the log axis (not 2×10^1), with the two thresholds among them.
        ticks = [t for t in (1, 2, 4, 8, 16, 32, 64, 96, 128, 256, 512, 1024, 2048, 4096) if bins[0] <= t <= bins[-1]]
        ax_size.set_xticks(ticks, [str(t) for t in ticks])
        ax_size.xaxis.set_minor_formatter(NullFormatter())
        for threshold in (32, 96):
            ax_size.axvline(threshold, color="black", linestyle="--", linewidth=1)
        # x in data units, y in axes units: the bucket names sit at the top whatever the counts.
        for x, label in ((math.sqrt(low * 32), "small"), (math.sqrt(32 * 96), "medium"), (96 * 1.5, "large")):
            ax_size.text(x, 0.98, label, ha="center", va="top", fontsize=9, transform=ax_size.get_xaxis_transform())
        ax_size.legend(loc="center right", fontsize=9)
        _save(fig, path)


def centre_grids(boxes: BoxData, n_classes: int) -> Any:
    """Counts of box centres per class: an int array (class, row, column) of HEATMAP_BINS square grids over the
    image, row 0 at the top; a centre on the far edge counts in the last cell."""
    import numpy as np

    class_ids = np.frombuffer(boxes.class_ids, dtype=np.int32)

    def cells(values: array[float]) -> Any:
        return np.clip((np.frombuffer(values, dtype=np.float64) * HEATMAP_BINS).astype(np.int64), 0, HEATMAP_BINS - 1)

    grids = np.zeros((n_classes, HEATMAP_BINS, HEATMAP_BINS), dtype=np.int64)
    np.add.at(grids, (class_ids, cells(boxes.rel_cy), cells(boxes.rel_cx)), 1)
    return grids


def plot_annotations(metadata: dict[str, Any], path: Path) -> None:
    """Where each class's boxes lie (heatmaps of box centres, from `annotation_heatmap`), and which share of each
    split's images holds each class (`class_coverage`): a class missing from a split shows as a 0 cell."""
    import matplotlib.style
    import numpy as np

    classes = [c["name"] for c in metadata["classes"]]
    labels = class_labels(classes)
    heatmaps = metadata["annotation_heatmap"]["classes"]
    coverage = metadata["class_coverage"]
    columns = max(1, min(len(classes), HEATMAP_COLUMNS))
    heat_rows = max(1, math.ceil(len(classes) / columns))
    with matplotlib.style.context("default"), matplotlib.rc_context(labels.rc):
        fig = _new_figure(max(8.0, 2.2 * columns), 2.3 * heat_rows + 0.5 * len(coverage) + 1.5)
        grid = fig.add_gridspec(heat_rows + 1, columns, height_ratios=[2.3] * heat_rows + [0.5 * len(coverage) + 1.0])
        for index, name in enumerate(classes):
            ax = fig.add_subplot(grid[index // columns, index % columns])
            counts = np.array(heatmaps[name])
            ax.imshow(counts, cmap="viridis", extent=(0, 1, 1, 0), interpolation="nearest")
            ax.set_title(f"{labels.texts[index]} ({int(counts.sum())})", fontsize=9, color=class_colour(index))
            ax.set_xticks([0, 0.5, 1])
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=7)
        ax_cov = fig.add_subplot(grid[heat_rows, :])
        splits = list(coverage)
        shares = np.array([[coverage[split][name] for name in classes] for split in splits]).reshape(
            len(splits), len(classes)
        )
        ax_cov.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        for (row, col), share in np.ndenumerate(shares):
            ax_cov.text(
                col,
                row,
                f"{share:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share > 0.6 else "black",
            )
        ax_cov.set_xticks(range(len(classes)), list(labels.texts), fontsize=8)
        ax_cov.set_yticks(range(len(splits)), splits, fontsize=8)
        ax_cov.set_title("share of each split's images holding the class", fontsize=9)
        fig.suptitle("box centres per class (x, y relative to the image)", fontsize=10)
        _save(fig, path)


def _render_example(example: Example, classes: list[str]) -> tuple[Any, str] | None:
    """One grid cell: the raw image in the frame training sees, its YOLO boxes, and the class names; None when
    the image is too large to decode within `DRAW_MAX_BYTES`."""
    from PIL import Image, ImageDraw

    labels = class_labels(classes)
    try:
        shown = figure_images.shown_reduced(example.image_path, CELL)
    except OSError as exc:
        raise VisError(
            f"cannot read {example.image_path} for the figure of examples ({exc}); data/raw changed since "
            "validate ran: rerun the pipeline (`dvc repro`)"
        ) from None
    if shown is None:
        return None
    image, pil_frame = shown
    scale = CELL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for box in example.boxes:
        # The labels are normalised by the frame training sees, so scaling by the shown size is enough.
        x0, y0 = (box.cx - box.w / 2) * size[0], (box.cy - box.h / 2) * size[1]
        x1, y1 = (box.cx + box.w / 2) * size[0], (box.cy + box.h / 2) * size[1]
        colour = class_colour(box.class_id)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        name, font = labels.texts[box.class_id], pillow_font(12, labels.fonts[box.class_id])
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        text_w, text_h = right - left + 4, bottom - top + 4
        ty = y0 - text_h if y0 - text_h >= 0 else y0  # above the box when there is room, else inside it
        tx = min(max(x0, 0), max(size[0] - text_w, 0))
        draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), name, fill="white", font=font)
    for box in example.predicted:
        x0, y0 = (box.cx - box.w / 2) * size[0], (box.cy - box.h / 2) * size[1]
        x1, y1 = (box.cx + box.w / 2) * size[0], (box.cy + box.h / 2) * size[1]
        _dashed_rectangle(draw, (x0, y0, x1, y1), class_colour(box.class_id))
    caption = f"{example.split}/{example.id}  {example.width}x{example.height}"
    if example.orientation != 1:
        caption += f"  EXIF {example.orientation}"
    if pil_frame != (example.width, example.height):
        caption += "  FRAME MISMATCH"
    return image, caption


def _dashed_rectangle(draw: Any, corners: tuple[float, float, float, float], colour: str, dash: float = 5) -> None:
    """A rectangle of dashes, a white one under each so it shows on any background."""
    x0, y0, x1, y1 = corners
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // (2 * dash)))
        for step in range(steps):
            start, end = (2 * step) / (2 * steps), (2 * step + 1) / (2 * steps)
            segment = (ax + (bx - ax) * start, ay + (by - ay) * start, ax + (bx - ax) * end, ay + (by - ay) * end)
            draw.line(segment, fill="white", width=3)
            draw.line(segment, fill=colour, width=1)


EXAMPLES_TITLE = "YOLO labels drawn back on the images, in the frame training sees"
FLAGGED_TITLE = "Samples a quality check flagged (caption: the check), with their YOLO labels"
AUDIT_TITLE = "Likely label errors, worst first (caption: the kind, the score): labels solid, the model's boxes dashed"


def draw_examples(
    examples: list[Example],
    classes: list[str],
    path: Path,
    count: int = GRID_SIZE,
    title: str = EXAMPLES_TITLE,
    empty: str = "no image with objects",
) -> None:
    """A grid of example images with their converted YOLO boxes drawn back on them, and a class legend.

    The first `count` examples that decode within `DRAW_MAX_BYTES` are drawn, in the order given; the others
    are left out (the log names them).
    """
    from PIL import Image, ImageDraw

    labels = class_labels(classes)
    cells: list[tuple[Any, str]] = []
    left_out: list[str] = []
    for example in examples:
        if len(cells) == count:
            break
        cell = _render_example(example, classes)
        if cell is None:
            left_out.append(f"{example.split}/{example.id} ({example.width}x{example.height})")
        else:
            cells.append(cell)
    if left_out:
        log.info(
            "figures: %s leaves out %d image(s) too large to decode within %d MB: %s",
            path.name,
            len(left_out),
            figure_images.DRAW_MAX_BYTES // 1_000_000,
            ", ".join(left_out),
        )
    font = pillow_font(13)
    caption_h, pad = 20, 8
    rows = max(1, math.ceil(len(cells) / COLUMNS))
    columns = min(max(len(cells), 3), COLUMNS)  # at least 3 wide: room for the title and legend
    width = columns * (CELL + pad) + pad
    # The class legend wraps onto more lines when there are many classes (VOC has 20).
    legend, x, y = [], pad, 28
    for class_id, name in enumerate(labels.texts):
        name_font = pillow_font(13, labels.fonts[class_id])
        item_w = 16 + round(name_font.getlength(name))
        if x > pad and x + item_w > width - pad:
            x, y = pad, y + 18
        legend.append((x, y, class_id, name, name_font))
        x += item_w + 14
    header = y + 20
    canvas = Image.new("RGB", (width, header + rows * (CELL + caption_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill="black", font=font)
    for x, y, class_id, name, name_font in legend:
        draw.rectangle((x, y, x + 12, y + 12), fill=class_colour(class_id))
        draw.text((x + 16, y - 1), name, fill="black", font=name_font)
    if not cells:
        draw.text((pad, header + 10), empty, fill="black", font=font)
    for index, (image, caption) in enumerate(cells):
        row, col = divmod(index, columns)
        left, top = pad + col * (CELL + pad), header + row * (CELL + caption_h + pad)
        canvas.paste(image, (left + (CELL - image.width) // 2, top + (CELL - image.height) // 2))
        draw.rectangle((left - 1, top - 1, left + CELL, top + CELL), outline="#cccccc")
        while caption and draw.textlength(caption, font=font) > CELL:
            caption = caption[:-2] + "…"
        draw.text((left, top + CELL + 3), caption, fill="black", font=font)
    canvas.save(path, format="PNG")
