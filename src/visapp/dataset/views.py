"""(data/yolo labels + split lists, data/raw images) -> an Ultralytics dataset: images/ beside labels/.

Ultralytics finds a label by replacing the last `/images/` with `/labels/` in the image's path (and the
extension with `.txt`), and writes a label cache beside the folder of the first label it reads (judged fresh
by paths and total size only). data/yolo holds labels whose images stay in data/raw, so whoever trains builds
a view here:

- mode "link" (training): a scratch folder outside every DVC output, wiped and rebuilt on each call, so no
  stale Ultralytics cache survives. Its cost does not grow with the images: for each pair of (raw image
  folder, label folder) of a split, `{split}/folders/{n}/images` links to the raw folder and
  `{split}/folders/{n}/labels` to data/yolo's label folder, and `{split}.txt` lists the split's images
  through those links. Ultralytics reads the labels through the link and writes its cache beside it, in
  the view. An image that cannot be reached that way gets an entry of its own under `{split}/files/`
  (named by its sample id, with a copy of its label): one whose name Ultralytics would not take (a suffix
  it does not read, a label name that would differ), or a JPEG followed by other bytes, which Ultralytics
  rewrites in place: that one is copied, so the rewrite lands in the copy, never in data/raw or the DVC
  cache behind it;
- mode "copy": a standalone copy (`visapp export-yolo DIR`) for use on another machine: `images/{split}/`
  beside `labels/{split}/`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visapp.errors import VisError
from visapp.formats.image_formats import jpeg_is_rewritten_by_ultralytics, sniff_format, trainable_suffix
from visapp.formats.voc_ids import sample_id
from visapp.formats.yolo import (
    DATA_YAML,
    IMAGES_DIR,
    LABELS_DIR,
    DataYaml,
    data_yaml_text,
    label_path,
    read_data_yaml,
    split_list_images,
    split_list_text,
)
from visapp.fsio import atomic_path

# Marks a folder as a link view, so that wiping it before a rebuild cannot delete anything else.
VIEW_MARKER = ".visapp-view"


def _inspect(image: Path) -> tuple[str, bool]:
    """The suffix the view gives an image (its own when Ultralytics accepts it, else its true format's), and
    whether Ultralytics would rewrite it in place (a JPEG with bytes after its end marker): then the view holds
    a copy, and the rewrite lands in the copy, never in data/raw or the DVC cache behind it. One open: this
    runs for every image of every training."""
    try:
        handle = image.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise VisError(f"{image} not found: `dvc checkout`, or rerun the pipeline") from None
    with handle:
        head = handle.read(16)
        handle.seek(max(handle.seek(0, 2) - 2, 0))
        tail = handle.read(2)
    fmt = sniff_format(head)
    if fmt is None:
        raise VisError(f"{image}: not a JPEG, PNG, BMP or WebP image; rerun the validate stage")
    return trainable_suffix(image.name, fmt), jpeg_is_rewritten_by_ultralytics(head[:3] + tail)


def _split_entries(yolo_dir: Path, raw_dir: Path, list_name: str) -> list[tuple[str, Path]]:
    """(sample id, absolute raw image path) for every image of one split list of data/yolo."""
    # normpath, not resolve(): the view links into data/raw, whose files may be symlinks into the DVC cache.
    raw_abs = os.path.normpath(raw_dir.absolute())
    # Whether each image is there is found when it is opened (`_inspect`): a stat each costs as much again.
    relatives = split_list_images(yolo_dir, raw_dir, list_name)
    return [(sample_id(relative), Path(f"{raw_abs}/{relative}")) for relative in relatives]


def _label_source(yolo_dir: Path, split: str, ident: str, image: Path, present: dict[Path, set[str]]) -> Path:
    """The label of `ident`, which must exist; `present` keeps the names found in each label folder (one listing
    a folder, not one stat a label)."""
    label = label_path(yolo_dir, split, ident)
    if label.parent not in present:
        present[label.parent] = {p.name for p in label.parent.iterdir()} if label.parent.is_dir() else set()
    if label.name not in present[label.parent]:
        raise VisError(f"{label} not found for {image}: rerun the convert stage")
    return label


def _own_entry(image: Path, label: Path, image_dest: Path, label_dest: Path, copy: bool, made: set[Path]) -> None:
    """An image's entry of its own in a view: the image copied (else linked, by its absolute path) and its label
    copied; `made` holds the folders already made."""
    for folder in (image_dest.parent, label_dest.parent):
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
    if copy:
        shutil.copyfile(image, image_dest)
    else:
        image_dest.symlink_to(image)
    shutil.copyfile(label, label_dest)


def _link_split(yolo_dir: Path, raw_dir: Path, root: Path, split: str, list_name: str) -> tuple[str, dict[str, str]]:
    """One split of a link view (see the module docstring); returns the name of its list of images, and the sample
    id of each image as the list names it."""
    yolo_abs, root_abs = yolo_dir.absolute(), root.resolve()
    # (raw image folder, sample id folder) -> what the list puts before an image's name to reach it through them
    linked: dict[tuple[Path, str], str] = {}
    made: set[Path] = set()
    listed: list[str] = []
    samples: dict[str, str] = {}
    present: dict[Path, set[str]] = {}
    for ident, image in _split_entries(yolo_dir, raw_dir, list_name):
        label = _label_source(yolo_dir, split, ident, image, present)
        suffix, rewritten = _inspect(image)
        id_folder, _, id_name = ident.rpartition("/")
        # Reached through the folder links when Ultralytics takes the name as it is and derives the label's name
        # (`rsplit(".", 1)[0] + ".txt"`) as convert wrote it.
        if not rewritten and image.name.endswith(suffix) and image.name.rsplit(".", 1)[0] == id_name:
            key = (image.parent, id_folder)
            if key not in linked:
                folder = f"{split}/folders/{len(linked)}"
                (root / folder).mkdir(parents=True)
                # Absolute targets: the view works from any working directory; a symlink in data/raw (into the
                # DVC cache, say) is followed when an image is read.
                (root / folder / IMAGES_DIR).symlink_to(image.parent, target_is_directory=True)
                labels = yolo_abs / LABELS_DIR / split / id_folder
                (root / folder / LABELS_DIR).symlink_to(labels, target_is_directory=True)
                linked[key] = f"{root_abs}/{folder}/{IMAGES_DIR}/"
            listed.append(linked[key] + image.name)
            samples[listed[-1]] = ident
            continue
        entry = f"{split}/files/{IMAGES_DIR}/{ident}{suffix}"
        _own_entry(image, label, root / entry, root / split / "files" / LABELS_DIR / f"{ident}.txt", rewritten, made)
        listed.append(f"{root_abs}/{entry}")
        samples[listed[-1]] = ident
    list_file = f"{split}.txt"
    (root / list_file).write_text(split_list_text(listed), encoding="utf-8", newline="\n")
    return list_file, samples


def _prepare_link_dest(dest: Path) -> None:
    """Wipe a previous view at `dest`; refuse a folder that is not one."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise VisError(f"{dest} is not a folder: give a scratch folder for the dataset view")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / VIEW_MARKER).is_file():
            raise VisError(f"{dest} is not empty and is not a dataset view: give an empty or new scratch folder")
        shutil.rmtree(dest)


def _copy_split(yolo_dir: Path, raw_dir: Path, root: Path, split: str, list_name: str) -> str:
    """One split of a standalone copy: `images/{split}/{id}{suffix}` beside `labels/{split}/{id}.txt`; returns
    the images' folder."""
    made: set[Path] = set()
    present: dict[Path, set[str]] = {}
    for ident, image in _split_entries(yolo_dir, raw_dir, list_name):
        label = _label_source(yolo_dir, split, ident, image, present)
        suffix, _rewritten = _inspect(image)
        image_dest = root / IMAGES_DIR / split / f"{ident}{suffix}"
        _own_entry(image, label, image_dest, label_path(root, split, ident), True, made)
    # An empty split still gets its folders: Ultralytics reports "no images" rather than "not found".
    (root / IMAGES_DIR / split).mkdir(parents=True, exist_ok=True)
    (root / LABELS_DIR / split).mkdir(parents=True, exist_ok=True)
    return f"{IMAGES_DIR}/{split}"


def _declared(yolo_dir: Path) -> DataYaml:
    """convert's data.yaml; it must list both train and val."""
    declared = read_data_yaml(yolo_dir / DATA_YAML)
    if "train" not in declared.splits or "val" not in declared.splits:
        raise VisError(f"{yolo_dir / DATA_YAML}: needs both `train` and `val` lists; rerun the convert stage")
    return declared


def build_view(yolo_dir: Path, raw_dir: Path, dest: Path, mode: Literal["link", "copy"] = "link") -> Path:
    """Build an Ultralytics dataset folder at `dest` from convert's output and the raw images.

    Args:
        yolo_dir: convert's output (labels/{split}/{id}.txt, {split}.txt, data.yaml).
        raw_dir: the raw dataset the split lists point into.
        dest: "link": a scratch folder, wiped and rebuilt (refused when it holds something that is not a
            view); "copy": must not exist or be empty, written atomically.
        mode: "link" (linked image and label folders, a list of images per split, data.yaml with the absolute
            `path`) or "copy" (standalone, data.yaml without `path`, so Ultralytics resolves `images/...` from
            the data.yaml's folder).

    Returns:
        `dest`; train with `dest / "data.yaml"`.
    """
    yolo_dir, raw_dir, dest = Path(yolo_dir), Path(raw_dir), Path(dest)
    if mode not in ("link", "copy"):
        raise ValueError(f"mode must be 'link' or 'copy', not {mode!r}")
    if mode == "copy":
        declared = _declared(yolo_dir)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise VisError(f"{dest} exists and is not empty: choose a new folder for the exported dataset")
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            folders = {
                split: _copy_split(yolo_dir, raw_dir, tmp, split, name) for split, name in declared.splits.items()
            }
            # No `path`: Ultralytics resolves `images/...` from the data.yaml's folder, wherever it is moved.
            copy = DataYaml(declared.names, folders)
            (tmp / DATA_YAML).write_text(data_yaml_text(copy), encoding="utf-8", newline="\n")
        return dest
    return build_link_view(yolo_dir, raw_dir, dest).root


@dataclass(frozen=True)
class LinkView:
    """A link view (see the module docstring): its folder, and for each split the list of its images and the
    sample id of each image as that list names it (what a label cache written from the manifest is keyed by)."""

    root: Path
    lists: dict[str, Path]
    samples: dict[str, dict[str, str]]

    @property
    def data_yaml(self) -> Path:
        """The data.yaml to train with."""
        return self.root / DATA_YAML


def build_link_view(yolo_dir: Path, raw_dir: Path, dest: Path) -> LinkView:
    """`build_view(..., mode="link")`, telling which sample each listed image is."""
    yolo_dir, raw_dir, dest = Path(yolo_dir), Path(raw_dir), Path(dest)
    declared = _declared(yolo_dir)
    _prepare_link_dest(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / VIEW_MARKER).write_text("built by visapp.dataset.views.build_view; wiped on each rebuild\n")
    built = {split: _link_split(yolo_dir, raw_dir, dest, split, name) for split, name in declared.splits.items()}
    view = DataYaml(declared.names, {split: list_file for split, (list_file, _) in built.items()}, str(dest.resolve()))
    (dest / DATA_YAML).write_text(data_yaml_text(view), encoding="utf-8", newline="\n")
    return LinkView(
        dest,
        {split: dest / list_file for split, (list_file, _) in built.items()},
        {split: samples for split, (_, samples) in built.items()},
    )
