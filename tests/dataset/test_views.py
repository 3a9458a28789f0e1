"""build_view / `visapp export-yolo`: Ultralytics dataset folders (images/ beside labels/) from data/yolo."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO_ROOT, run
from factory import DATA, obj, row, voc_manifest, write_manifest
from visapp.dataset.convert import convert
from visapp.dataset.synthetic import write_synthetic
from visapp.dataset.views import VIEW_MARKER, build_view
from visapp.errors import VisError

pytestmark = pytest.mark.unit


@pytest.fixture
def converted(tmp_path) -> tuple[Path, Path]:
    """(yolo_dir, raw_dir) of a small converted sample."""
    raw = tmp_path / "data" / "raw"
    write_synthetic(raw, images=20, seed=4)
    manifest = write_manifest(tmp_path / "data" / "validated" / "manifest.jsonl", voc_manifest(raw))
    convert(manifest, raw, tmp_path / "data" / "yolo", DATA, seed=0)
    return tmp_path / "data" / "yolo", raw


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_link_view_links_raw_images_beside_copied_labels(converted, tmp_path):
    yolo, raw = converted
    dest = build_view(yolo, raw, tmp_path / "scratch" / "view", mode="link")
    for split in ("train", "val"):
        listed = (yolo / f"{split}.txt").read_text().splitlines()
        images = sorted((dest / "images" / split).iterdir())
        assert len(images) == len(listed)
        for image in images:
            assert image.is_symlink()
            target = image.readlink()
            assert target.is_absolute()
            assert target == (raw / "JPEGImages" / image.name).resolve()
            label = dest / "labels" / split / f"{image.stem}.txt"  # where Ultralytics looks for it
            assert not label.is_symlink()
            assert label.read_bytes() == (yolo / "labels" / split / f"{image.stem}.txt").read_bytes()
    data = yaml.safe_load((dest / "data.yaml").read_text())
    assert data == {
        "path": str(dest.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "circle", 1: "square", 2: "triangle"},
    }
    assert "download" not in (dest / "data.yaml").read_text()


def test_link_view_is_rebuilt_fresh_without_a_stale_cache(converted, tmp_path):
    yolo, raw = converted
    dest = tmp_path / "view"
    build_view(yolo, raw, dest, mode="link")
    before = files(dest)
    (dest / "labels" / "train.cache").write_text("stale Ultralytics cache")
    (dest / "images" / "train" / "gone.jpg").symlink_to(raw / "JPEGImages" / "000001.jpg")
    build_view(yolo, raw, dest, mode="link")
    assert files(dest) == before


def test_link_view_refuses_to_wipe_a_folder_that_is_not_a_view(converted, tmp_path):
    yolo, raw = converted
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(VisError, match="not a dataset view"):
        build_view(yolo, raw, dest, mode="link")
    assert files(dest) == {"notes.txt"}
    assert not (dest / VIEW_MARKER).exists()


def test_copy_view_is_standalone_and_refuses_an_existing_folder(converted, tmp_path):
    yolo, raw = converted
    dest = build_view(yolo, raw, tmp_path / "export", mode="copy")
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    images = sorted(p for p in (dest / "images").rglob("*") if p.is_file())
    assert len(images) == 20
    for image in images:
        assert image.read_bytes() == (raw / "JPEGImages" / image.name).read_bytes()
    data = yaml.safe_load((dest / "data.yaml").read_text())
    assert "path" not in data  # Ultralytics then resolves images/... from the data.yaml's own folder
    assert data["train"] == "images/train"
    with pytest.raises(VisError, match="not empty"):
        build_view(yolo, raw, dest, mode="copy")
    # The same view bytes on a second export: deterministic.
    again = build_view(yolo, raw, tmp_path / "export2", mode="copy")
    assert {f: (again / f).read_bytes() for f in files(again)} == {f: (dest / f).read_bytes() for f in files(dest)}


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_image_suffix_ultralytics_rejects_gets_its_true_format_suffix(tmp_path):
    raw = tmp_path / "raw"
    (raw / "JPEGImages").mkdir(parents=True)
    (raw / "JPEGImages" / "odd.img").write_bytes(_png_bytes())  # Ultralytics would skip a .img file
    (raw / "JPEGImages" / "named.jpg").write_bytes(_png_bytes())  # a PNG named .jpg: OpenCV reads it by content
    rows = [
        row("odd", obj(), image="JPEGImages/odd.img", split="train", width=32, height=32),
        row("named", obj(), split="val", width=32, height=32),
    ]
    convert(write_manifest(tmp_path / "m.jsonl", rows), raw, tmp_path / "yolo", DATA, 0)
    dest = build_view(tmp_path / "yolo", raw, tmp_path / "view", mode="copy")
    assert files(dest) >= {"images/train/odd.png", "labels/train/odd.txt", "images/val/named.jpg"}


def test_a_stale_yolo_folder_is_a_clear_error(converted, tmp_path):
    yolo, raw = converted
    victim = (yolo / "train.txt").read_text().splitlines()[0]
    (yolo / victim).unlink()
    with pytest.raises(VisError, match="not found"):
        build_view(yolo, raw, tmp_path / "view", mode="link")
    with pytest.raises(VisError, match="not inside"):
        build_view(yolo, tmp_path / "elsewhere", tmp_path / "view2", mode="link")
    with pytest.raises(VisError, match="convert stage first"):
        build_view(tmp_path / "nothing", raw, tmp_path / "view3", mode="copy")


@pytest.mark.slow
def test_export_yolo_writes_a_dataset_that_one_epoch_of_yolo_train_accepts(tmp_path):
    """Acceptance 9: convert copies no image; `visapp export-yolo DIR` trains in `yolo detect train`."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", project / "params.yaml")
    run(["visapp", "sample", "--out", "data/raw", "--images", "24"], project)
    write_manifest(project / "data/validated/manifest.jsonl", voc_manifest(project / "data/raw"))
    stage = run([sys.executable, str(REPO_ROOT / "stages" / "convert.py")], project)
    assert "convert: 24 images" in stage.stderr
    assert {p.suffix for p in (project / "data/yolo").rglob("*") if p.is_file()} == {".txt", ".yaml"}

    run(["visapp", "export-yolo", "export"], project)
    export = project / "export"
    assert (export / "images").is_dir()
    assert (export / "labels").is_dir()
    assert len(list((export / "images").rglob("*.*"))) == 24

    workdir = tmp_path / "elsewhere"  # another working directory: data.yaml must not depend on it
    workdir.mkdir()
    proc = run(
        [
            "yolo", "detect", "train", f"data={export / 'data.yaml'}", "model=yolov8n.yaml", "epochs=1",
            "imgsz=64", "batch=4", "workers=0", "device=cpu", f"project={tmp_path / 'runs'}", "name=t",
            "exist_ok=True", "plots=False", "val=True",
        ],
        workdir,
        timeout=300,
    )  # fmt: skip
    assert (tmp_path / "runs" / "t" / "weights" / "last.pt").is_file(), proc.stdout + proc.stderr
    for split in ("train", "val"):  # Ultralytics' own scan: every label found, none corrupt
        scan = np.load(export / "labels" / f"{split}.cache", allow_pickle=True).item()
        found, missing, _empty, corrupt, total = scan["results"]
        assert (missing, corrupt, scan["msgs"]) == (0, 0, [])
        assert found == total == len((project / "data/yolo" / f"{split}.txt").read_text().splitlines())
    assert not list(workdir.iterdir())  # nothing downloaded into the working directory
