"""(data/yolo labels + split lists, data/raw images) -> an Ultralytics dataset folder: images/ beside labels/.

Ultralytics finds a label by replacing `/images/` with `/labels/` in the image's path, and writes a
`labels/{split}.cache` beside the labels it reads (judged fresh by paths and total size only). data/yolo
holds labels whose images stay in data/raw, so whoever trains builds a view here:

- mode "link": symlinks to the raw images and copies of the labels in a scratch folder outside every DVC
  output, wiped and rebuilt on each call, so no stale Ultralytics cache survives (training does this); an
  image Ultralytics would rewrite in place (a JPEG followed by other bytes) is copied, not linked;
- mode "copy": a standalone copy (`visapp export-yolo DIR`) for use on another machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from visapp.errors import VisError
from visapp.formats.images import jpeg_is_rewritten_by_ultralytics, sniff_format, trainable_suffix
from visapp.formats.voc import sample_id
from visapp.formats.yolo import (
    DATA_YAML,
    IMAGES_DIR,
    LABELS_DIR,
    DataYaml,
    data_yaml_text,
    label_path,
    read_data_yaml,
    read_split_list,
)
from visapp.fsio import atomic_path

# Marks a folder as a link view, so that wiping it before a rebuild cannot delete anything else.
VIEW_MARKER = ".visapp-view"


def _inspect(image: Path) -> tuple[str, bool]:
    """The suffix the view gives an image (its own when Ultralytics accepts it, else its true format's), and
    whether Ultralytics would rewrite it in place (a JPEG with bytes after its end marker): then the view holds
    a copy, and the rewrite lands in the copy, never in data/raw or the DVC cache behind it. One open: this
    runs for every image of every training."""
    with image.open("rb") as handle:
        head = handle.read(16)
        handle.seek(max(handle.seek(0, 2) - 2, 0))
        tail = handle.read(2)
    fmt = sniff_format(head)
    if fmt is None:
        raise VisError(f"{image}: not a JPEG, PNG, BMP or WebP image; rerun the validate stage")
    return trainable_suffix(image.name, fmt), jpeg_is_rewritten_by_ultralytics(head[:3] + tail)


def _split_entries(yolo_dir: Path, raw_dir: Path, list_name: str) -> list[tuple[str, Path]]:
    """(sample id, raw image path) for every image of one split list of data/yolo."""
    list_path = yolo_dir / list_name
    raw_abs, yolo_abs = raw_dir.absolute(), yolo_dir.absolute()
    entries = []
    for line in read_split_list(list_path):
        image = Path(os.path.normpath(yolo_abs / line))
        relative = Path(os.path.relpath(image, raw_abs)).as_posix()
        if relative.startswith("../"):
            raise VisError(f"{list_path}: {line} is not inside {raw_dir}; rerun convert with this raw folder")
        if not image.is_file():
            raise VisError(f"{list_path}: image {line} not found; `dvc checkout` or rerun the pipeline")
        entries.append((sample_id(relative), image))
    return entries


def _prepare_link_dest(dest: Path) -> None:
    """Wipe a previous view at `dest`; refuse a folder that is not one."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise VisError(f"{dest} is not a folder: give a scratch folder for the dataset view")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / VIEW_MARKER).is_file():
            raise VisError(f"{dest} is not empty and is not a dataset view: give an empty or new scratch folder")
        shutil.rmtree(dest)


def _populate(yolo_dir: Path, raw_dir: Path, root: Path, declared: DataYaml, mode: str) -> None:
    for split, list_name in declared.splits.items():
        made: set[Path] = set()
        for ident, image in _split_entries(yolo_dir, raw_dir, list_name):
            label = label_path(yolo_dir, split, ident)
            suffix, rewritten = _inspect(image)
            image_dest = root / IMAGES_DIR / split / f"{ident}{suffix}"
            label_dest = label_path(root, split, ident)
            for folder in (image_dest.parent, label_dest.parent):
                if folder not in made:
                    folder.mkdir(parents=True, exist_ok=True)
                    made.add(folder)
            if mode == "link" and not rewritten:
                # Absolute targets: the view works from any working directory (`image` is absolute, and a
                # symlink in data/raw, into the DVC cache say, is followed when the image is read). Labels are
                # copied, not linked, so Ultralytics' cache beside them never lands in data/yolo.
                image_dest.symlink_to(image)
            else:
                shutil.copyfile(image, image_dest)
            try:
                shutil.copyfile(label, label_dest)
            except FileNotFoundError:
                raise VisError(f"{label} not found for {image}: rerun the convert stage") from None
        # An empty split still gets its folders: Ultralytics reports "no images" rather than "not found".
        (root / IMAGES_DIR / split).mkdir(parents=True, exist_ok=True)
        (root / LABELS_DIR / split).mkdir(parents=True, exist_ok=True)


def _view_yaml(declared: DataYaml, root: str | None) -> str:
    """The view's data.yaml: image folders; `path` absolute for a link view, absent for a standalone copy."""
    return data_yaml_text(DataYaml(declared.names, {split: f"{IMAGES_DIR}/{split}" for split in declared.splits}, root))


def build_view(yolo_dir: Path, raw_dir: Path, dest: Path, mode: Literal["link", "copy"] = "link") -> Path:
    """Build an Ultralytics dataset folder at `dest` from convert's output and the raw images.

    Args:
        yolo_dir: convert's output (labels/{split}/{id}.txt, {split}.txt, data.yaml).
        raw_dir: the raw dataset the split lists point into.
        dest: "link": a scratch folder, wiped and rebuilt (refused when it holds something that is not a
            view); "copy": must not exist or be empty, written atomically.
        mode: "link" (symlinked images, data.yaml with the absolute `path`) or "copy" (standalone, data.yaml
            without `path`, so Ultralytics resolves `images/...` from the data.yaml's folder).

    Returns:
        `dest`; train with `dest / "data.yaml"`.
    """
    yolo_dir, raw_dir, dest = Path(yolo_dir), Path(raw_dir), Path(dest)
    if mode not in ("link", "copy"):
        raise ValueError(f"mode must be 'link' or 'copy', not {mode!r}")
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    if "train" not in declared.splits or "val" not in declared.splits:
        raise VisError(f"{yolo_dir / DATA_YAML}: needs both `train` and `val` lists; rerun the convert stage")
    if mode == "copy":
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise VisError(f"{dest} exists and is not empty: choose a new folder for the exported dataset")
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            _populate(yolo_dir, raw_dir, tmp, declared, mode)
            (tmp / DATA_YAML).write_text(_view_yaml(declared, None), encoding="utf-8", newline="\n")
        return dest
    _prepare_link_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / VIEW_MARKER).write_text("built by visapp.dataset.views.build_view; wiped on each rebuild\n")
    _populate(yolo_dir, raw_dir, dest, declared, mode)
    (dest / DATA_YAML).write_text(_view_yaml(declared, str(dest.resolve())), encoding="utf-8", newline="\n")
    return dest
