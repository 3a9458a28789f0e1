"""metadata stage: dataset_metadata.json numbers, fingerprint, DVC hash, deterministic figures."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from conftest import REPO_ROOT, run
from visapp.dataset.figures import FIGURE_FILES, Example
from visapp.dataset.statistics import _ExamplePicker, build_metadata, coco_bucket
from visapp.errors import VisError
from visapp.formats.dvcfile import read_dvc_out
from visapp.formats.manifest import ManifestObject, ManifestRow, write_manifest
from visapp.formats.yolo import (
    Box,
    DataYaml,
    data_yaml_text,
    label_line,
    label_path,
    label_text,
    split_list_text,
    voc_box_to_yolo,
)

pytestmark = pytest.mark.unit

CLASSES = ["circle", "square", "triangle"]
COLOURS = {"circle": "red", "square": "blue", "triangle": "green"}


@dataclass
class Img:
    """A crafted image: boxes are (class, x0, y0, x1, y1) in pixels of the displayed (EXIF-applied) frame."""

    split: str
    path: str  # relative to raw_dir
    size: tuple[int, int]  # displayed frame (width, height)
    boxes: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    orientation: int = 1
    difficult: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # in the manifest only


CRAFTED = [
    Img(
        "train",
        "JPEGImages/t1.jpg",
        (800, 800),
        [
            ("circle", 100, 100, 132, 132),  # 32x32 = 32²: medium (on the threshold)
            ("square", 200, 100, 231, 132),  # 31x32 < 32²: small
            ("square", 300, 300, 396, 396),  # 96x96 = 96²: large (on the threshold)
            ("circle", 500, 500, 595, 596),  # 95x96 < 96²: medium
        ],
        difficult=[("triangle", 600, 100, 700, 200)],  # left out by convert: not counted
    ),
    Img("train", "JPEGImages/t2.jpg", (800, 800)),  # background
    # Stored 200x100 with EXIF orientation 6: training sees 100x200.
    Img("train", "JPEGImages/t3.png", (100, 200), [("circle", 25, 75, 75, 125)], orientation=6),
    Img(
        "val",
        "JPEGImages/v1.jpg",
        (640, 480),
        [("triangle", 10, i * 96, 10 + 64 * (i + 1), (i + 1) * 96) for i in range(5)],
    ),
    Img("val", "JPEGImages/v2.jpg", (640, 480)),  # background
]


def _draw_image(img: Img) -> Image.Image:
    """The displayed frame with each shape filling its box, then stored so that EXIF brings it back."""
    picture = Image.new("RGB", img.size, (235, 225, 200))
    draw = ImageDraw.Draw(picture)
    for name, x0, y0, x1, y1 in img.boxes:
        colour = COLOURS[name]
        if name == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
        elif name == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        else:
            draw.polygon([(x0, y1 - 1), ((x0 + x1) / 2, y0), (x1 - 1, y1 - 1)], fill=colour)
    if img.orientation == 6:
        picture = picture.transpose(Image.Transpose.ROTATE_90)  # exif_transpose applies ROTATE_270
    return picture


def write_dataset(root: Path, images: list[Img], classes: list[str] = CLASSES) -> dict[str, Path]:
    """raw/ images, validated/manifest.jsonl and yolo/ (labels, split lists, data.yaml), through the library's
    writers, as the stages write them."""
    raw, validated, yolo = root / "raw", root / "validated", root / "yolo"
    rows, lists = [], {}
    for img in images:
        path = raw / img.path
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = _draw_image(img)
        exif = Image.Exif()
        if img.orientation != 1:
            exif[0x0112] = img.orientation
        picture.save(path, format="PNG" if path.suffix == ".png" else "JPEG", exif=exif)
        stem = Path(img.path).stem
        objects = [
            ManifestObject(name, classes.index(name), x0, y0, x1, y1, difficult)
            for difficult, boxes in ((False, img.boxes), (True, img.difficult))
            for name, x0, y0, x1, y1 in boxes
        ]
        rows.append(
            ManifestRow(
                id=stem,
                image=img.path,
                annotation=f"Annotations/{stem}.xml" if objects else None,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                format="png" if path.suffix == ".png" else "jpeg",
                width=picture.width,
                height=picture.height,
                orientation=img.orientation,
                split=img.split,
                objects=objects,
            )
        )
        label = label_path(yolo, img.split, stem)
        label.parent.mkdir(parents=True, exist_ok=True)
        lines = [label_line(classes.index(n), voc_box_to_yolo(*b, *img.size, one_based=False)) for n, *b in img.boxes]
        label.write_text(label_text(lines))
        lists.setdefault(img.split, []).append(f"../raw/{img.path}")
    write_manifest(validated / "manifest.jsonl", sorted(rows, key=lambda r: r.image))
    for split, entries in lists.items():
        (yolo / f"{split}.txt").write_text(split_list_text(entries))
    (yolo / "data.yaml").write_text(data_yaml_text(DataYaml(classes, {s: f"{s}.txt" for s in lists}, ".")))
    return {"manifest_path": validated / "manifest.jsonl", "yolo_dir": yolo, "raw_dir": raw}


@pytest.fixture
def crafted(tmp_path: Path) -> dict[str, Path]:
    return write_dataset(tmp_path / "data", CRAFTED)


def _build(paths: dict[str, Path], out_dir: Path, classes: list[str] = CLASSES) -> dict:
    return build_metadata(out_dir=out_dir, classes=classes, **paths)


def test_counts_per_split_and_class_come_from_the_yolo_labels(crafted, tmp_path):
    meta = _build(crafted, tmp_path / "meta")
    assert meta["classes"] == [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]
    assert set(meta["splits"]) == {"train", "val"}  # no test split in data.yaml
    train, val, overall = meta["splits"]["train"], meta["splits"]["val"], meta["overall"]
    assert (train["images"], train["objects"], train["background_images"]) == (3, 5, 1)
    assert train["objects_per_class"] == {"circle": 3, "square": 2, "triangle": 0}  # the difficult one is not there
    assert train["images_per_class"] == {"circle": 2, "square": 1, "triangle": 0}
    assert (val["images"], val["objects"], val["background_images"]) == (2, 5, 1)
    assert val["objects_per_class"] == {"circle": 0, "square": 0, "triangle": 5}
    assert val["images_per_class"] == {"circle": 0, "square": 0, "triangle": 1}
    assert (overall["images"], overall["objects"], overall["background_images"]) == (5, 10, 2)
    assert overall["objects_per_class"] == {"circle": 3, "square": 2, "triangle": 5}
    assert overall["images_per_class"] == {"circle": 2, "square": 1, "triangle": 1}
    assert meta["source"]["manifest_rows"] == 5


def test_image_sizes_are_those_of_the_frame_training_sees(crafted, tmp_path):
    meta = _build(crafted, tmp_path / "meta")
    train, overall = meta["splits"]["train"], meta["overall"]
    # t3.png is stored 200x100 with EXIF orientation 6: training sees 100x200.
    assert train["resolutions"] == {"100x200": 1, "800x800": 2}
    assert train["image_width"] == {"min": 100, "median": 800.0, "max": 800}
    assert train["image_height"] == {"min": 200, "median": 800.0, "max": 800}
    assert overall["resolutions"] == {"100x200": 1, "640x480": 2, "800x800": 2}
    assert overall["image_width"] == {"min": 100, "median": 640.0, "max": 800}
    assert overall["image_height"] == {"min": 200, "median": 480.0, "max": 800}


def test_coco_buckets_split_at_32_and_96_pixels_squared(crafted, tmp_path):
    meta = _build(crafted, tmp_path / "meta")
    # train: 31x32 small; 32x32 (on the threshold) and 95x96 medium; 96x96 (on the threshold) large; 50x50 medium.
    assert meta["splits"]["train"]["box_size_coco"] == {"small": 1, "medium": 3, "large": 1}
    # val: 64x96 medium; 128x96 .. 320x96 large.
    assert meta["splits"]["val"]["box_size_coco"] == {"small": 0, "medium": 1, "large": 4}
    assert meta["overall"]["box_size_coco"] == {"small": 1, "medium": 4, "large": 5}
    assert [coco_bucket(a) for a in (1023.999, 1024, 9215.9, 9216, 1024 - 1e-9)] == [
        "small", "medium", "medium", "large", "medium"
    ]  # fmt: skip


def test_box_quantiles_are_linear_interpolations_of_the_relative_sizes(crafted, tmp_path):
    meta = _build(crafted, tmp_path / "meta")
    # val widths 0.1 .. 0.5: index q*(n-1), linear between neighbours.
    assert meta["splits"]["val"]["box_width"] == {
        "p0": 0.1, "p5": 0.12, "p25": 0.2, "p50": 0.3, "p75": 0.4, "p95": 0.48, "p100": 0.5
    }  # fmt: skip
    assert meta["splits"]["val"]["box_height"] == dict.fromkeys(["p0", "p5", "p25", "p50", "p75", "p95", "p100"], 0.2)
    # train widths sorted: 31/800, 32/800, 95/800, 96/800, 50/100.
    assert meta["splits"]["train"]["box_width"] == {
        "p0": 0.03875, "p5": 0.039, "p25": 0.04, "p50": 0.11875, "p75": 0.12, "p95": 0.424, "p100": 0.5
    }  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fingerprint_follows_the_documented_recipe(crafted, tmp_path):
    meta = _build(crafted, tmp_path / "meta")
    yolo, raw = crafted["yolo_dir"], crafted["raw_dir"]
    files = [[p.relative_to(raw).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()] for p in raw.rglob("*.*")]
    files += [
        [p.relative_to(yolo).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()]
        for p in yolo.rglob("labels/**/*.txt")
    ]
    payload = {"classes": [{"id": i, "name": n} for i, n in enumerate(CLASSES)], "files": sorted(files)}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert len(files) == 10
    assert meta["fingerprint"] == expected


def test_fingerprint_is_stable_on_rerun_and_changes_with_one_label_byte(crafted, tmp_path):
    first = _build(crafted, tmp_path / "a")["fingerprint"]
    assert _build(crafted, tmp_path / "b")["fingerprint"] == first
    label = crafted["yolo_dir"] / "labels/train/t1.txt"
    text = label.read_text()
    assert "0.145000" in text
    label.write_text(text.replace("0.145000", "0.145001", 1))  # same size: a cache keyed by size would miss it
    assert _build(crafted, tmp_path / "c")["fingerprint"] != first


def test_fingerprint_changes_with_the_class_list(crafted, tmp_path):
    first = _build(crafted, tmp_path / "a")["fingerprint"]
    data_yaml = crafted["yolo_dir"] / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    data["names"][2] = "star"  # same labels, another class name
    data_yaml.write_text(yaml.safe_dump(data))
    renamed = _build(crafted, tmp_path / "b", classes=["circle", "square", "star"])
    assert renamed["fingerprint"] != first
    assert renamed["overall"]["objects_per_class"]["star"] == 5


def test_two_runs_write_byte_identical_json_and_figures(crafted, tmp_path):
    _build(crafted, tmp_path / "a")
    _build(crafted, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [
        "annotations.png",
        "box_sizes.png",
        "class_distribution.png",
        "dataset_metadata.json",
        "flagged.png",
        "samples.png",
    ]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    text = (tmp_path / "a/dataset_metadata.json").read_text()
    assert str(tmp_path) not in text  # no absolute paths
    assert json.loads(text)["raw_dvc_hash"] is None  # no raw.dvc beside raw/


def test_figures_are_valid_pngs_of_a_sane_size(crafted, tmp_path):
    _build(crafted, tmp_path / "meta")
    for name, (min_w, min_h) in {"class_distribution.png": (600, 400), "box_sizes.png": (800, 350),
                                 "samples.png": (900, 300)}.items():  # fmt: skip
        path = tmp_path / "meta" / name
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min_w <= image.width <= 3000 and min_h <= image.height <= 3000, (name, image.size)
            image.verify()
        assert b"Software" not in path.read_bytes()[:4096]


def test_example_grid_boxes_sit_on_the_shapes(crafted, tmp_path):
    """The rotated PNG's circle is drawn back in the frame training sees: the box frames the red disc."""
    from visapp.dataset import figures

    image = crafted["raw_dir"] / "JPEGImages/t3.png"
    example = Example("train", "t3", 100, 200, 6, image, (Box(0, 0.5, 0.5, 0.5, 0.25),))
    image, caption = figures._render_example(example, CLASSES)
    assert image.size == (150, 300)  # portrait: EXIF applied
    assert "EXIF 6" in caption and "MISMATCH" not in caption
    # Shown at 1.5x: the disc spans x 37.5..112.5, y 112.5..187.5; its centre is red, a corner of the box is not.
    assert image.getpixel((75, 150))[0] > 200 and image.getpixel((75, 150))[1] < 60
    assert image.getpixel((42, 117))[0] < 250 or image.getpixel((42, 117))[2] > 150  # outside the disc


def test_example_picker_shows_every_class_and_rotated_images_before_repeating_one():
    picker = _ExamplePicker(n_classes=2)
    for i in range(30):
        boxes = (Box(0, 0.5, 0.5, 0.1, 0.1),) + ((Box(1, 0.5, 0.5, 0.1, 0.1),) if i == 29 else ())
        orientation = 6 if i in (20, 25) else 1
        picker.offer((0, f"{i:03d}"), Example("train", f"{i:03d}", 10, 10, orientation, Path(f"{i:03d}.jpg"), boxes))
    picked = [example.id for example in picker.pick()]
    assert picked[:6] == ["020", "000", "029", "025", "001", "002"]  # rotated, class 0, rare class 1, ...
    assert len(picked) == 12 == len(set(picked))
    assert picked[6:] == [f"{i:03d}" for i in range(3, 9)]


def test_a_dataset_of_background_images_only_gives_nulls_and_figures(tmp_path):
    paths = write_dataset(
        tmp_path / "data", [Img("train", "JPEGImages/a.jpg", (64, 48)), Img("val", "b.png", (48, 64))]
    )
    meta = _build(paths, tmp_path / "meta")
    assert meta["overall"]["background_images"] == meta["overall"]["images"] == 2
    assert meta["overall"]["box_width"] == dict.fromkeys(["p0", "p5", "p25", "p50", "p75", "p95", "p100"])
    assert meta["overall"]["box_size_coco"] == {"small": 0, "medium": 0, "large": 0}
    assert sorted(p.name for p in (tmp_path / "meta").glob("*.png")) == [
        "annotations.png", "box_sizes.png", "class_distribution.png", "flagged.png", "samples.png"
    ]  # fmt: skip


def test_out_dir_is_replaced_whole_and_left_alone_on_error(crafted, tmp_path):
    out = tmp_path / "meta"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    _build(crafted, out)
    assert not (out / "stale.png").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (crafted["yolo_dir"] / "labels/val/v1.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(VisError, match=r"v1\.txt:1: class id 7"):
        _build(crafted, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_inconsistent_inputs_fail_with_a_message_naming_the_fix(crafted, tmp_path):
    with pytest.raises(VisError, match="run the validate stage first"):
        _build({**crafted, "manifest_path": tmp_path / "nope.jsonl"}, tmp_path / "m")
    with pytest.raises(VisError, match="rerun the convert stage"):
        _build(crafted, tmp_path / "m", classes=["square", "circle", "triangle"])
    (crafted["yolo_dir"] / "labels/train/t2.txt").unlink()
    with pytest.raises(VisError, match=r"t2\.txt is missing"):
        _build(crafted, tmp_path / "m")


@pytest.mark.integration
def test_raw_dvc_hash_is_the_md5_dvc_add_recorded(crafted, tmp_path):
    root = crafted["raw_dir"].parent
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "add", "-q", "raw"], root)
    meta = _build(crafted, tmp_path / "meta")
    md5 = meta["raw_dvc_hash"]
    assert md5 == yaml.safe_load((root / "raw.dvc").read_text())["outs"][0]["md5"]
    assert md5.endswith(".dir")
    assert (root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file()  # the object DVC stored for data/raw
    assert read_dvc_out(Path("raw")) is None  # relative to a folder with no raw.dvc


@pytest.mark.integration
def test_stage_script_runs_without_torch_and_reports(crafted, tmp_path, monkeypatch):
    work = crafted["raw_dir"].parent
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["paths"].update(raw="raw", validated="validated", yolo="yolo", metadata="metadata")
    params["data"]["classes"] = CLASSES
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(REPO_ROOT / 'stages/metadata.py')!r}]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in ('torch', 'ultralytics', 'dvc', 'mlflow') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    proc = run([sys.executable, "-c", probe], work, env={"VISAPP_WORKERS": "2"})  # figures drawn side by side
    assert "heavy: []" in proc.stdout
    assert "metadata: 5 images, fingerprint " in proc.stderr
    # The same bytes as drawn one after another, in this process.
    monkeypatch.setenv("VISAPP_WORKERS", "1")
    _build(crafted, tmp_path / "one_by_one")
    written = sorted(p.name for p in (work / "metadata").iterdir())
    assert written == sorted([*FIGURE_FILES, "dataset_metadata.json"])
    for name in written:
        assert (work / "metadata" / name).read_bytes() == (tmp_path / "one_by_one" / name).read_bytes(), name


@pytest.mark.integration
def test_stage_script_exits_2_with_one_line_when_inputs_are_missing(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stages/metadata.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "data/metadata").exists()


def test_two_hundred_images_are_all_counted(tmp_path):
    images = [
        Img("train" if i % 5 else "val", f"JPEGImages/{i:04d}.jpg", (320, 240),
            [(CLASSES[(i + k) % 3], 20 + 60 * k, 30, 70 + 60 * k, 90 + 10 * k) for k in range(i % 4)])
        for i in range(200)
    ]  # fmt: skip
    paths = write_dataset(tmp_path / "data", images)
    meta = _build(paths, tmp_path / "meta")
    assert meta["overall"]["images"] == 200
    assert meta["overall"]["background_images"] == 50
    shutil.rmtree(tmp_path / "data")
