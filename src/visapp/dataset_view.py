"""(data/yolo labels + split lists, data/raw images) -> an Ultralytics dataset folder: images/ beside labels/.

Ultralytics finds a label by replacing `/images/` with `/labels/` in the image's path, and writes a
`labels/{split}.cache` beside the labels it reads (judged fresh by paths and total size only). data/yolo
holds labels whose images stay in data/raw, so whoever trains builds a view here:

- mode "link": symlinks to the raw images and copies of the labels in a scratch folder outside every DVC
  output, wiped and rebuilt on each call, so no stale Ultralytics cache survives (training does this);
- mode "copy": a standalone copy (`visapp export-yolo DIR`) for use on another machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from visapp.errors import VisError
from visapp.voc import SPLITS, sample_id

# Suffixes that every recent Ultralytics accepts and that OpenCV decodes by content, whatever the suffix says
# (a PNG named .jpg reads fine). Hard-coded so that building a view does not import ultralytics.
ACCEPTED_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".webp"}
# Marks a folder as a link view, so that wiping it before a rebuild cannot delete anything else.
VIEW_MARKER = ".visapp-view"

_MAGIC_SUFFIX = [(b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp")]


def _true_suffix(path: Path) -> str:
    """The suffix of the image's real format, from its first bytes."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    for magic, suffix in _MAGIC_SUFFIX:
        if head.startswith(magic):
            return suffix
    raise VisError(f"{path}: not a JPEG, PNG, BMP or WebP image; rerun the validate stage")


def view_suffix(image: Path) -> str:
    """The suffix the view gives an image: its own when Ultralytics accepts it, else its true format's."""
    return image.suffix if image.suffix.lower() in ACCEPTED_SUFFIXES else _true_suffix(image)


def _read_data_yaml(yolo_dir: Path) -> tuple[list[str], list[str]]:
    """(class names in id order, splits listed) from data/yolo/data.yaml."""
    import yaml

    path = yolo_dir / "data.yaml"
    if not path.is_file():
        raise VisError(f"{path} not found: run the convert stage first (`dvc repro convert`)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[key] for key in sorted(names)]
    if not isinstance(names, list) or not names:
        raise VisError(f"{path}: no class `names`; rerun the convert stage")
    splits = [name for name in SPLITS if data.get(name)]
    if "train" not in splits or "val" not in splits:
        raise VisError(f"{path}: needs both `train` and `val` lists; rerun the convert stage")
    return [str(name) for name in names], splits


def _split_entries(yolo_dir: Path, raw_dir: Path, split: str) -> list[tuple[str, Path]]:
    """(sample id, raw image path) for every image in data/yolo/{split}.txt."""
    list_path = yolo_dir / f"{split}.txt"
    if not list_path.is_file():
        raise VisError(f"{list_path} not found: rerun the convert stage")
    raw_abs, yolo_abs = raw_dir.absolute(), yolo_dir.absolute()
    entries = []
    for line in list_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        image = Path(os.path.normpath(yolo_abs / line))
        relative = Path(os.path.relpath(image, raw_abs)).as_posix()
        if relative.startswith("../"):
            raise VisError(f"{list_path}: {line} is not inside {raw_dir}; rerun convert with this raw folder")
        if not image.is_file():
            raise VisError(f"{list_path}: image {line} not found; `dvc checkout` or rerun the pipeline")
        entries.append((sample_id(relative), image))
    return entries


def _view_yaml(classes: list[str], splits: list[str], root: str | None) -> str:
    import yaml

    head = (
        {"path": root}
        if root is not None
        else {}  # no `path:`: Ultralytics then resolves the lists from this file's folder
    )
    body = {name: f"images/{name}" for name in splits}
    text = yaml.safe_dump({**head, **body}, sort_keys=False, allow_unicode=True)
    return text + yaml.safe_dump({"names": dict(enumerate(classes))}, sort_keys=True, allow_unicode=True)


def _prepare_link_dest(dest: Path) -> None:
    """Wipe a previous view at `dest`; refuse a folder that is not one."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise VisError(f"{dest} is not a folder: give a scratch folder for the dataset view")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / VIEW_MARKER).is_file():
            raise VisError(f"{dest} is not empty and is not a dataset view: give an empty or new scratch folder")
        shutil.rmtree(dest)


def _populate(yolo_dir: Path, raw_dir: Path, root: Path, splits: list[str], mode: str) -> None:
    for split in splits:
        made: set[Path] = set()
        for ident, image in _split_entries(yolo_dir, raw_dir, split):
            label = yolo_dir / "labels" / split / f"{ident}.txt"
            if not label.is_file():
                raise VisError(f"{label} not found for {image}: rerun the convert stage")
            image_dest = root / "images" / split / f"{ident}{view_suffix(image)}"
            label_dest = root / "labels" / split / f"{ident}.txt"
            for folder in (image_dest.parent, label_dest.parent):
                if folder not in made:
                    folder.mkdir(parents=True, exist_ok=True)
                    made.add(folder)
            if mode == "link":
                # Absolute targets: the view works from any working directory. Labels are copied, not
                # linked, so Ultralytics' cache beside them never lands in data/yolo.
                image_dest.symlink_to(image.resolve())
            else:
                shutil.copyfile(image, image_dest)
            shutil.copyfile(label, label_dest)
        # An empty split still gets its folders: Ultralytics reports "no images" rather than "not found".
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)


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
    from visapp.fsio import atomic_path

    yolo_dir, raw_dir, dest = Path(yolo_dir), Path(raw_dir), Path(dest)
    if mode not in ("link", "copy"):
        raise ValueError(f"mode must be 'link' or 'copy', not {mode!r}")
    classes, splits = _read_data_yaml(yolo_dir)
    if mode == "copy":
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise VisError(f"{dest} exists and is not empty: choose a new folder for the exported dataset")
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            _populate(yolo_dir, raw_dir, tmp, splits, mode)
            (tmp / "data.yaml").write_text(_view_yaml(classes, splits, None), encoding="utf-8", newline="\n")
        return dest
    _prepare_link_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / VIEW_MARKER).write_text("built by visapp.dataset_view.build_view; wiped on each rebuild\n")
    _populate(yolo_dir, raw_dir, dest, splits, mode)
    root = str(dest.resolve())
    (dest / "data.yaml").write_text(_view_yaml(classes, splits, root), encoding="utf-8", newline="\n")
    return dest
