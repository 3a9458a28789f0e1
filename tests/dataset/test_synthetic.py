"""`visapp sample`: a deterministic, varied, learnable synthetic VOC dataset in the standard layout."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run
from visapp.dataset.synthetic import CLASSES, DEFAULT_IMAGES, IMAGE_SIZE, MIN_OBJECT_PX, write_synthetic
from visapp.errors import VisError

pytestmark = pytest.mark.unit


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def annotations(raw: Path) -> dict[str, list[tuple[str, list[int]]]]:
    """{stem: [(class, [xmin, ymin, xmax, ymax]), ...]} for every XML."""
    out = {}
    for xml in sorted((raw / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        out[xml.stem] = [
            (o.findtext("name"), [int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in root.iter("object")
        ]
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, object]:
    raw = tmp_path_factory.mktemp("sample") / "raw"
    return raw, write_synthetic(raw, images=80, seed=0)


def test_write_sample_is_byte_identical_on_rerun(tmp_path):
    write_synthetic(tmp_path / "a", images=30, seed=5)
    write_synthetic(tmp_path / "b", images=30, seed=5)
    write_synthetic(tmp_path / "c", images=30, seed=6)
    first = tree_bytes(tmp_path / "a")
    assert tree_bytes(tmp_path / "b") == first
    assert tree_bytes(tmp_path / "c") != first


def test_sample_has_the_standard_voc_layout_and_formats(sample):
    raw, summary = sample
    assert sorted(p.name for p in raw.iterdir()) == ["Annotations", "JPEGImages"]
    images = sorted((raw / "JPEGImages").iterdir())
    assert len(images) == summary.images == 80
    for path in images:
        with Image.open(path) as im:
            assert im.size == (IMAGE_SIZE, IMAGE_SIZE)
            assert im.mode == "RGB"
            assert im.format == {".jpg": "JPEG", ".png": "PNG"}[path.suffix]  # clean: no PNG named .jpg
            assert not im.getexif()  # no orientation tag, no timestamp
    n_png = sum(p.suffix == ".png" for p in images)
    assert 1 <= n_png == summary.png < len(images) / 4  # mostly JPEG, a few PNG
    for xml in (raw / "Annotations").glob("*.xml"):
        root = ET.parse(xml).getroot()
        assert (raw / "JPEGImages" / root.findtext("filename")).is_file()
        assert root.findtext("size/width") == str(IMAGE_SIZE)


def test_sample_has_background_images_of_both_kinds(sample):
    raw, summary = sample
    stems = {p.stem for p in (raw / "JPEGImages").iterdir()}
    found = annotations(raw)
    without_xml = stems - set(found)
    empty_xml = {stem for stem, objects in found.items() if not objects}
    assert len(without_xml) == summary.background_without_xml >= 1
    assert len(empty_xml) == summary.background_with_empty_xml >= 1
    assert 0.04 <= (len(without_xml) + len(empty_xml)) / len(stems) <= 0.12


def test_sample_objects_vary_in_class_size_aspect_and_overlap(sample):
    raw, summary = sample
    boxes = [(name, box) for objects in annotations(raw).values() for name, box in objects]
    assert {name for name, _ in boxes} == set(CLASSES)
    assert {name: sum(n == name for n, _ in boxes) for name in CLASSES} == summary.objects_per_class
    widths = np.array([b[2] - b[0] + 1 for _, b in boxes])
    heights = np.array([b[3] - b[1] + 1 for _, b in boxes])
    for _, (xmin, ymin, xmax, ymax) in boxes:
        assert 1 <= xmin < xmax <= IMAGE_SIZE
        assert 1 <= ymin < ymax <= IMAGE_SIZE
    assert min(widths.min(), heights.min()) >= MIN_OBJECT_PX - 2  # triangles' drawn edges may lose a pixel
    assert max(widths.max(), heights.max()) >= 3 * min(widths.min(), heights.min())  # several sizes
    aspect = widths / heights
    assert (aspect < 0.8).any()
    assert (aspect > 1.25).any()
    assert (np.abs(aspect - 1) < 0.05).any()  # and true squares and circles
    assert summary.overlapping_pairs > 0


def test_sample_colours_do_not_give_the_class_away(sample):
    """The centre pixel of circles and squares (always inside the shape) spreads over many colours per class."""
    raw, _ = sample
    centres: dict[str, list[np.ndarray]] = {"circle": [], "square": []}
    for stem, objects in annotations(raw).items():
        image = next((raw / "JPEGImages").glob(f"{stem}.*"))
        pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
        for name, (xmin, ymin, xmax, ymax) in objects:
            if name in centres:
                centres[name].append(pixels[(ymin + ymax) // 2 - 1, (xmin + xmax) // 2 - 1])
    for values in centres.values():
        assert np.std(np.array(values), axis=0).min() > 40


def test_summary_is_readable(sample):
    _, summary = sample
    text = str(summary)
    assert "80 images" in text
    for name in CLASSES:
        assert name in text
    assert "background images" in text


def test_write_sample_refuses_a_non_empty_folder_and_fills_an_empty_one(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(VisError, match="not an empty folder"):
        write_synthetic(tmp_path / "full", images=2)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    write_synthetic(tmp_path / "empty", images=2)
    assert len(list((tmp_path / "empty" / "JPEGImages").iterdir())) == 2
    with pytest.raises(VisError, match="at least 1"):
        write_synthetic(tmp_path / "none", images=0)


def test_default_sample_has_its_images_and_backgrounds(tmp_path):
    summary = write_synthetic(tmp_path / "raw")
    assert summary.images == DEFAULT_IMAGES
    assert summary.background >= 0.06 * DEFAULT_IMAGES


@pytest.mark.integration
def test_visapp_sample_cli_writes_once_then_refuses(tmp_path):
    proc = run(["visapp", "sample", "--out", "raw", "--images", "5", "--seed", "3"], tmp_path)
    assert "5 images" in proc.stdout
    again = run(["visapp", "sample", "--out", "raw", "--images", "5"], tmp_path, check=False)
    assert again.returncode == 2
    assert again.stderr.startswith("error: raw exists and is not an empty folder")
    assert "Traceback" not in again.stderr
