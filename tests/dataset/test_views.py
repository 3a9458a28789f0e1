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


def test_link_view_links_folders_not_images(converted, tmp_path):
    """The view's cost does not grow with the images: two folder links a split, and one list of its images."""
    yolo, raw = converted
    dest = build_view(yolo, raw, tmp_path / "scratch" / "view", mode="link")
    splits = [split for split in ("train", "val", "test") if (yolo / f"{split}.txt").is_file()]
    links = {f"{split}/folders/0/{kind}" for split in splits for kind in ("images", "labels")}
    assert files(dest) == {".visapp-view", "data.yaml", *(f"{split}.txt" for split in splits), *links}
    for split in splits:
        assert (dest / split / "folders/0/images").readlink() == (raw / "JPEGImages").absolute()
        assert (dest / split / "folders/0/labels").readlink() == (yolo / "labels" / split).absolute()
        listed = (dest / f"{split}.txt").read_text().splitlines()
        assert [Path(line).name for line in listed] == [
            Path(line).name for line in (yolo / f"{split}.txt").read_text().splitlines()
        ]
        assert all(Path(line).is_absolute() for line in listed)
    data = yaml.safe_load((dest / "data.yaml").read_text())
    assert data == {
        "path": str(dest.resolve()),
        **{split: f"{split}.txt" for split in splits},
        "names": {0: "circle", 1: "square", 2: "triangle"},
    }


@pytest.mark.integration  # Ultralytics starts a process as it is imported
def test_ultralytics_reads_every_image_and_label_through_the_link_view_and_caches_in_it(converted, tmp_path):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    yolo, raw = converted
    before = files(yolo)
    dest = build_view(yolo, raw, tmp_path / "view", mode="link")
    data = check_det_dataset(str(dest / "data.yaml"))
    for split in ("train", "val"):
        dataset = YOLODataset(img_path=data[split], imgsz=32, data=data, augment=False, hyp=get_cfg())
        listed = (yolo / f"{split}.txt").read_text().splitlines()
        assert len(dataset.labels) == len(listed)
        for image, label in zip(dataset.im_files, dataset.label_files, strict=True):
            assert Path(image).resolve() == (raw / "JPEGImages" / Path(image).name).resolve()
            assert Path(label).read_bytes() == (yolo / "labels" / split / Path(label).name).read_bytes()
    assert files(yolo) == before  # Ultralytics' caches landed in the view, beside the label links
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.cache")) == [
        "train/folders/0/labels.cache",
        "val/folders/0/labels.cache",
    ]


def test_link_view_is_rebuilt_fresh_without_a_stale_cache(converted, tmp_path):
    yolo, raw = converted
    dest = tmp_path / "view"
    build_view(yolo, raw, dest, mode="link")
    before = files(dest)
    (dest / "train/folders/0/labels.cache").write_text("stale Ultralytics cache")
    (dest / "train/files/images").mkdir(parents=True)
    (dest / "train/files/images/gone.jpg").symlink_to(raw / "JPEGImages" / "000001.jpg")
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
    view = build_view(tmp_path / "yolo", raw, tmp_path / "link", mode="link")
    assert (view / "train/files/images/odd.png").readlink() == (raw / "JPEGImages/odd.img").absolute()
    assert (view / "train/files/labels/odd.txt").read_bytes() == (tmp_path / "yolo/labels/train/odd.txt").read_bytes()
    assert (view / "train.txt").read_text() == f"{view.resolve()}/train/files/images/odd.png\n"
    assert (view / "val.txt").read_text() == f"{view.resolve()}/val/folders/0/images/named.jpg\n"


def test_a_jpeg_ultralytics_would_rewrite_is_copied_into_the_link_view(tmp_path):
    """Ultralytics rewrites in place a JPEG with bytes after its end marker: the view gives it a copy to rewrite."""
    raw = tmp_path / "raw"
    (raw / "JPEGImages").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, "JPEG")
    (raw / "JPEGImages" / "trailer.jpg").write_bytes(buffer.getvalue() + b"CAMERA-TRAILER")
    (raw / "JPEGImages" / "plain.jpg").write_bytes(buffer.getvalue())
    rows = [row(name, obj(), split="train", width=32, height=32) for name in ("plain", "trailer")]
    rows.append(row("other", obj(), split="val", width=32, height=32))
    (raw / "JPEGImages" / "other.jpg").write_bytes(buffer.getvalue())
    convert(write_manifest(tmp_path / "m.jsonl", rows), raw, tmp_path / "yolo", DATA, 0)
    view = build_view(tmp_path / "yolo", raw, tmp_path / "view", mode="link")
    copy = view / "train/files/images/trailer.jpg"
    assert not copy.is_symlink()
    assert copy.read_bytes() == (raw / "JPEGImages/trailer.jpg").read_bytes()
    assert (view / "train.txt").read_text().splitlines() == [
        f"{view.resolve()}/train/files/images/trailer.jpg",
        f"{view.resolve()}/train/folders/0/images/plain.jpg",
    ]


@pytest.mark.integration  # Ultralytics starts a process as it is imported
def test_images_in_nested_and_top_folders_get_a_folder_link_each_and_ultralytics_finds_their_labels(tmp_path):
    from ultralytics.data.utils import img2label_paths

    raw = tmp_path / "raw"
    for rel in ("JPEGImages/a.jpg", "JPEGImages/sub/b.jpg", "JPEGImages/sub/deeper/c.png", "top.jpg"):
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(_png_bytes())
    rows = [
        row("a", obj(), split="train", width=32, height=32),
        row("sub/b", obj("square"), image="JPEGImages/sub/b.jpg", split="train", width=32, height=32),
        row("sub/deeper/c", obj("triangle"), image="JPEGImages/sub/deeper/c.png", split="train", width=32, height=32),
        row("top", obj(), image="top.jpg", split="train", width=32, height=32),
        row("v", obj(), split="val", width=32, height=32),
    ]
    (raw / "JPEGImages/v.jpg").write_bytes(_png_bytes())
    yolo = tmp_path / "yolo"
    convert(write_manifest(tmp_path / "m.jsonl", rows), raw, yolo, DATA, 0)
    view = build_view(yolo, raw, tmp_path / "view", mode="link")
    listed = (view / "train.txt").read_text().splitlines()
    assert len(listed) == 4
    assert len(list((view / "train" / "folders").iterdir())) == 4  # one per (image folder, label folder)
    for image, label in zip(listed, img2label_paths(listed), strict=True):
        shown = Path(image).resolve()
        ident = {"a.jpg": "a", "b.jpg": "sub/b", "c.png": "sub/deeper/c", "top.jpg": "top"}[shown.name]
        assert shown == (raw / rows[[r.id for r in rows].index(ident)].image).resolve()
        assert Path(label).read_bytes() == (yolo / "labels" / "train" / f"{ident}.txt").read_bytes()


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
    """Convert copies no image; `visapp export-yolo DIR` writes a dataset that `yolo detect train` trains on."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", project / "params.yaml")
    run(["visapp", "sample", "--out", "data/raw", "--images", "24"], project)
    write_manifest(project / "data/validated/manifest.jsonl", voc_manifest(project / "data/raw"))
    stage = run([sys.executable, str(REPO_ROOT / "stages" / "convert.py")], project)
    assert "convert: 24 images" in stage.stderr
    # labels, lists, data.yaml and digest.json: no image
    assert {p.suffix for p in (project / "data/yolo").rglob("*") if p.is_file()} == {".txt", ".yaml", ".json"}

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
