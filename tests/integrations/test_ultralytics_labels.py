"""Ultralytics' label cache written from the manifest: Ultralytics loads it instead of opening every image, it
holds what Ultralytics' own scan finds, and a file changed after it was written makes Ultralytics scan again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from factory import Obj, data_config, image_bytes, write_manifest, write_sample
from visapp.dataset.convert import convert
from visapp.dataset.synthetic import CLASSES, write_synthetic
from visapp.dataset.views import build_link_view
from visapp.integrations import ultralytics
from visapp.integrations.ultralytics_labels import write_label_cache

pytestmark = pytest.mark.integration  # Ultralytics imports torch, which runs ldconfig

DATA = data_config(classes=list(CLASSES), allow_background=True)


@pytest.fixture
def view(tmp_path):
    """A link view of a converted sample with the cases the manifest must answer for: an image rotated by its
    EXIF orientation, duplicate boxes, an image without boxes, a JPEG with bytes after its end (the view holds a
    copy of it), and a list of the manifest rows by id."""
    raw = tmp_path / "data" / "raw"
    write_synthetic(raw, images=30, seed=4)
    write_sample(raw, "rotated", exif_orientation=6, image_size=(64, 48), size=(48, 64))
    twice = Obj("circle", (10, 10, 40, 30))
    write_sample(raw, "twice", objects=[twice, twice])
    write_sample(raw, "empty", objects=[])
    write_sample(raw, "trailing", image=image_bytes("jpeg", (64, 48), seed=9) + b"\0\0trailing")
    rows = voc_manifest_with(raw)
    manifest = write_manifest(tmp_path / "data" / "validated" / "manifest.jsonl", rows)
    convert(manifest, raw, tmp_path / "data" / "yolo", DATA, seed=0)
    built = build_link_view(tmp_path / "data" / "yolo", raw, tmp_path / "view")
    return built, {row.id: row for row in rows}


def voc_manifest_with(raw: Path):
    from visapp.dataset.validate import validate_dataset

    result = validate_dataset(raw, DATA)
    assert result.report["rejected"] == 0, result.report
    return result.rows


def dataset(list_file: Path):
    """Ultralytics' own detection dataset over a split list (what its trainer builds)."""
    from ultralytics.data.dataset import YOLODataset

    data = {"names": dict(enumerate(CLASSES)), "nc": len(CLASSES), "channels": 3}
    return YOLODataset(img_path=str(list_file), data=data, imgsz=64, augment=False, rect=False, prefix="test: ")


def comparable(labels: list[dict]) -> list[tuple]:
    return [
        (lb["im_file"], tuple(lb["shape"]), lb["cls"].tolist(), np.round(lb["bboxes"], 6).tolist()) for lb in labels
    ]


def stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_ultralytics_loads_the_written_cache_and_finds_what_its_own_scan_finds(view, tmp_path):
    built, rows = view
    with ultralytics.session(tmp_path / "ultralytics"):
        for split, list_file in built.lists.items():
            assert built.samples[split], f"{split} is empty: the fixture needs more images"
            samples = {path: rows[ident] for path, ident in built.samples[split].items()}
            cache = write_label_cache(list_file, samples, len(CLASSES))
            assert cache is not None and cache.is_relative_to(built.root), split
            before = stamp(cache)
            from_manifest = comparable(dataset(list_file).labels)
            assert stamp(cache) == before, f"{split}: Ultralytics scanned the images instead of loading the cache"

            cache.unlink()
            scanned = comparable(dataset(list_file).labels)  # Ultralytics opens every image and writes its own
            assert cache.is_file()
            assert from_manifest == scanned, split

    every = {name for split in built.samples.values() for name in split.values()}
    assert {"rotated", "twice", "empty", "trailing"} <= every
    rotated = rows["rotated"]
    assert (rotated.width, rotated.height, rotated.orientation) == (64, 48, 6)  # stored; Ultralytics sees 48x64


def test_a_label_changed_after_the_cache_was_written_makes_ultralytics_scan_again(view, tmp_path):
    built, rows = view
    samples = {path: rows[ident] for path, ident in built.samples["train"].items()}
    with ultralytics.session(tmp_path / "ultralytics"):
        cache = write_label_cache(built.lists["train"], samples, len(CLASSES))
        assert cache is not None
        first = dataset(built.lists["train"]).labels[0]
        label = Path(first["im_file"].replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}")).with_suffix(".txt")
        with label.open("a", encoding="utf-8") as handle:
            handle.write("1 0.5 0.5 0.25 0.25\n")
        before = stamp(cache)
        again = dataset(built.lists["train"]).labels[0]
        assert stamp(cache) != before  # rescanned and written anew
        assert len(again["cls"]) == len(first["cls"]) + 1


def test_an_image_the_manifest_does_not_know_leaves_the_split_to_ultralytics(view, tmp_path):
    built, rows = view
    samples = {path: rows[ident] for path, ident in built.samples["train"].items()}
    samples.pop(next(iter(samples)))
    with ultralytics.session(tmp_path / "ultralytics"):
        assert write_label_cache(built.lists["train"], samples, len(CLASSES)) is None
    assert not list(built.root.rglob("*.cache"))
