"""Dataset statistics and example images -> deterministic PNG figures (class distribution, box sizes, examples).

Deterministic bytes: matplotlib draws with its default style (a user's matplotlibrc does not leak in), on
the Agg canvas, at a fixed size and dpi, and without the "Software" PNG text (it carries the version);
the grid of examples is drawn with Pillow and its bundled default font. Nothing is downloaded.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visapp.errors import VisError
from visapp.formats.yolo import Box

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_FILES = ("class_distribution.png", "box_sizes.png", "samples.png")
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


def class_colour(class_id: int) -> str:
    return PALETTE[class_id % len(PALETTE)]


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


@dataclass
class BoxData:
    """Every kept box, compactly: class id, relative width/height, and sqrt of its pixel area."""

    class_ids: array = field(default_factory=lambda: array("i"))
    rel_w: array = field(default_factory=lambda: array("d"))
    rel_h: array = field(default_factory=lambda: array("d"))
    side_px: array = field(default_factory=lambda: array("d"))

    def add(self, boxes: list[Box], width: int, height: int) -> None:
        for box in boxes:
            self.class_ids.append(box.class_id)
            self.rel_w.append(box.w)
            self.rel_h.append(box.h)
            self.side_px.append(math.sqrt(max(box.w * width * box.h * height, 0.0)))


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
    splits = metadata["splits"]
    with matplotlib.style.context("default"):
        fig = _new_figure(max(8.0, 1.2 * len(classes) + 3), 7.5)
        ax_objects, ax_images = fig.subplots(2, 1)
        panels = [
            (ax_objects, classes, lambda s: [s["objects_per_class"][c] for c in classes], "objects"),
            (
                ax_images,
                [*classes, "(background)"],
                lambda s: [s["images_per_class"][c] for c in classes] + [s["background_images"]],
                "images",
            ),
        ]
        for ax, labels, values_of, what in panels:
            x = np.arange(len(labels))
            width = 0.8 / max(len(splits), 1)
            for i, (split, stats) in enumerate(splits.items()):
                offset = (i - (len(splits) - 1) / 2) * width
                total = stats["objects"] if what == "objects" else stats["images"]
                bars = ax.bar(
                    x + offset, values_of(stats), width, label=f"{split} ({total})", color=SPLIT_COLOURS.get(split)
                )
                ax.bar_label(bars, fontsize=8, padding=1)
            ax.set_xticks(x, labels)
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

    with matplotlib.style.context("default"):
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
            label=[classes[c] for c in present],
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


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled font: nothing to download


def _render_example(example: Example, classes: list[str]):
    """One grid cell: the raw image in the frame training sees, its YOLO boxes, and the class names."""
    from PIL import Image, ImageDraw, ImageOps

    from visapp.formats.images import displayed_size

    font = _font(12)
    try:
        with Image.open(example.image_path) as opened:
            exif_orientation = opened.getexif().get(0x0112, 1)
            pil_frame = displayed_size(*opened.size, exif_orientation if exif_orientation in range(1, 9) else 1)
            opened.draft("RGB", (CELL, CELL))  # JPEG: decode at a reduced scale, much faster for big photos
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as exc:
        raise VisError(
            f"cannot read {example.image_path} for the figure of examples ({exc}); data/raw changed since "
            "validate ran: rerun the pipeline (`dvc repro`)"
        ) from None
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
        name = classes[box.class_id]
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        text_w, text_h = right - left + 4, bottom - top + 4
        ty = y0 - text_h if y0 - text_h >= 0 else y0  # above the box when there is room, else inside it
        tx = min(max(x0, 0), max(size[0] - text_w, 0))
        draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), name, fill="white", font=font)
    caption = f"{example.split}/{example.id}  {example.width}x{example.height}"
    if example.orientation != 1:
        caption += f"  EXIF {example.orientation}"
    if pil_frame != (example.width, example.height):
        caption += "  FRAME MISMATCH"
    return image, caption


def draw_examples(examples: list[Example], classes: list[str], path: Path) -> None:
    """A grid of example images with their converted YOLO boxes drawn back on them, and a class legend."""
    from PIL import Image, ImageDraw

    font = _font(13)
    caption_h, pad = 20, 8
    rows = max(1, math.ceil(len(examples) / COLUMNS))
    columns = min(max(len(examples), 3), COLUMNS)  # at least 3 wide: room for the title and legend
    width = columns * (CELL + pad) + pad
    # The class legend wraps onto more lines when there are many classes (VOC has 20).
    legend, x, y = [], pad, 28
    for class_id, name in enumerate(classes):
        item_w = 16 + round(font.getlength(name))
        if x > pad and x + item_w > width - pad:
            x, y = pad, y + 18
        legend.append((x, y, class_id, name))
        x += item_w + 14
    header = y + 20
    canvas = Image.new("RGB", (width, header + rows * (CELL + caption_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), "YOLO labels drawn back on the images, in the frame training sees", fill="black", font=font)
    for x, y, class_id, name in legend:
        draw.rectangle((x, y, x + 12, y + 12), fill=class_colour(class_id))
        draw.text((x + 16, y - 1), name, fill="black", font=font)
    if not examples:
        draw.text((pad, header + 10), "no image with objects", fill="black", font=font)
    for index, example in enumerate(examples):
        image, caption = _render_example(example, classes)
        row, col = divmod(index, columns)
        left, top = pad + col * (CELL + pad), header + row * (CELL + caption_h + pad)
        canvas.paste(image, (left + (CELL - image.width) // 2, top + (CELL - image.height) // 2))
        draw.rectangle((left - 1, top - 1, left + CELL, top + CELL), outline="#cccccc")
        while caption and draw.textlength(caption, font=font) > CELL:
            caption = caption[:-2] + "…"
        draw.text((left, top + CELL + 3), caption, fill="black", font=font)
    canvas.save(path, format="PNG")
