"""convert: the VOC -> YOLO formulas, EXIF frames checked against decoded pixels, stable splits, exact outputs."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from factory import DATA, data_config, obj, row, voc_manifest, write_manifest
from visapp.config import SplitConfig
from visapp.dataset.convert import convert
from visapp.dataset.splits import assign_split
from visapp.dataset.synthetic import CLASSES, write_synthetic
from visapp.errors import VisError
from visapp.formats.image_formats import displayed_size
from visapp.formats.yolo import to_displayed_frame, voc_box_to_yolo, yolo_to_voc_box

pytestmark = pytest.mark.unit

# --- helpers ------------------------------------------------------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_labels(out_dir: Path) -> dict[str, list[list[float]]]:
    """{split/id: [[cls, cx, cy, w, h], ...]}."""
    return {
        p.relative_to(out_dir / "labels").with_suffix("").as_posix(): [
            [float(v) for v in line.split()] for line in p.read_text().splitlines()
        ]
        for p in sorted((out_dir / "labels").rglob("*.txt"))
    }


def coloured_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel edges around the red pixels of an RGB array."""
    mask = (pixels[..., 0] > 128) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def exif_jpeg(width: int, height: int, rect: tuple[int, int, int, int], orientation: int) -> bytes:
    """A black JPEG of stored size width x height, a red rectangle on pixels rect (x0, y0, x1, y1 inclusive)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0 : y1 + 1, x0 : x1 + 1] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def cv2_pixels(data: bytes) -> np.ndarray:
    """RGB pixels as Ultralytics reads them: `ultralytics.utils.patches.imread` is cv2.imdecode(bytes, COLOR),
    which applies the EXIF orientation."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return bgr[..., ::-1]


# --- pure helpers ------------------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=10_000)
coords = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(coords, coords, coords, coords, sizes, sizes, st.booleans())
def test_voc_box_to_yolo_matches_design_formulas(x_a, x_b, y_a, y_b, width, height, one_based):
    xmin, xmax, ymin, ymax = min(x_a, x_b), max(x_a, x_b), min(y_a, y_b), max(y_a, y_b)
    shift = 1 if one_based else 0
    cx, cy, w, h = voc_box_to_yolo(xmin, ymin, xmax, ymax, width, height, one_based)
    assert cx == pytest.approx(((xmin + xmax) / 2 - shift) / width, abs=1e-6)
    assert cy == pytest.approx(((ymin + ymax) / 2 - shift) / height, abs=1e-6)
    assert w == pytest.approx((xmax - xmin) / width, abs=1e-6)
    assert h == pytest.approx((ymax - ymin) / height, abs=1e-6)


unit = st.floats(min_value=0, max_value=1, allow_nan=False)


@given(unit, unit, unit, unit, sizes, sizes, st.booleans())
def test_yolo_to_voc_to_yolo_is_identity_within_rounding(cx, cy, w, h, width, height, one_based):
    voc = yolo_to_voc_box(cx, cy, w, h, width, height, one_based)
    back = voc_box_to_yolo(*voc, width, height, one_based)
    # Labels hold six decimals: the round trip must print the same label.
    for original, again in zip((cx, cy, w, h), back, strict=True):
        assert abs(round(again, 6) - round(original, 6)) <= 1.01e-6


@given(coords, coords, coords, coords, sizes, sizes, st.booleans())
def test_voc_to_six_decimal_yolo_to_voc_stays_within_a_thousandth_of_a_pixel(x_a, x_b, y_a, y_b, w_, h_, one_based):
    xmin, xmax, ymin, ymax = min(x_a, x_b), max(x_a, x_b), min(y_a, y_b), max(y_a, y_b)
    written = [round(v, 6) for v in voc_box_to_yolo(xmin, ymin, xmax, ymax, w_, h_, one_based)]
    again = yolo_to_voc_box(*written, w_, h_, one_based)
    # 5e-7 per normalised value, times at most 10,000 pixels, twice (centre and half size).
    for original, back in zip((xmin, ymin, xmax, ymax), again, strict=True):
        assert abs(original - back) <= 0.011


def exif_image(fmt: str, width: int, height: int, rect: tuple[int, int, int, int], orientation: int) -> bytes:
    """A black image of stored size width x height, white on pixels rect (x0, y0, x1, y1 inclusive), with EXIF."""
    pixels = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0 : y1 + 1, x0 : x1 + 1] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 100, "subsampling": 0}, "WEBP": {"lossless": True}, "PNG": {}}[fmt]
    Image.fromarray(pixels).save(buffer, fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def opencv_box(data: bytes) -> tuple[int, int, int, int]:
    """The white rectangle's pixels (x0, y0, x1, y1 inclusive) in the image OpenCV decodes: the frame training sees."""
    import cv2

    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(grey > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
@settings(max_examples=6, derandomize=True, deadline=None)
@given(cells=st.tuples(*[st.integers(0, 5)] * 4))
def test_labels_equal_ultralytics_formula_on_the_box_drawn_on_the_displayed_image(
    tmp_path_factory, orientation, fmt, cells
):
    """The oracle: OpenCV turns the real pixels; the box a person would draw on what it shows, 1-based, through
    Ultralytics' VOC formula. Our label of the box drawn on the stored pixels must be that, to 1e-6."""
    width, height = 96, 64  # rectangles on a 16-pixel grid: JPEG blocks do not blur their edges
    a, b, c, d = cells
    x0, x1 = sorted((a * 16 % width, (b * 16 + 15) % width))
    y0, y1 = sorted((c * 16 % height, (d * 16 + 15) % height))
    data = exif_image(fmt, width, height, (x0, y0, x1, y1), orientation)
    X0, Y0, X1, Y1 = opencv_box(data)
    shown_w, shown_h = displayed_size(width, height, orientation)
    expected = voc_box_to_yolo(X0 + 1, Y0 + 1, X1 + 1, Y1 + 1, shown_w, shown_h, one_based=True)

    raw = tmp_path_factory.mktemp("raw")
    (raw / "JPEGImages").mkdir()
    (raw / "JPEGImages" / "a.img").write_bytes(data)
    manifest = write_manifest(
        raw.parent / f"{raw.name}.jsonl",
        [row("a", obj("square", x0 + 1, y0 + 1, x1 + 1, y1 + 1), width=width, height=height,
             orientation=orientation, boxes_frame="stored", split="train")],
    )  # fmt: skip
    convert(manifest, raw, raw.parent / f"{raw.name}-yolo", DATA, seed=0)
    ((cls, *label),) = read_labels(raw.parent / f"{raw.name}-yolo")["train/a"]
    assert cls == 1
    assert label == pytest.approx(expected, abs=1e-6), (orientation, fmt)


@pytest.mark.parametrize("orientation", [0, 9, -1])
def test_an_invalid_orientation_is_refused(orientation):
    with pytest.raises(ValueError, match="orientation"):
        to_displayed_frame((1, 1, 2, 2), 10, 10, orientation)


# --- splits ------------------------------------------------------------------------------------------------


def fake_sha(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def test_assign_split_follows_the_ratios_and_the_seed():
    ratios = SplitConfig(train=0.7, val=0.2, test=0.1)
    splits = [assign_split(fake_sha(i), 0, ratios) for i in range(5000)]
    for name, ratio in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert splits.count(name) / len(splits) == pytest.approx(ratio, abs=0.03)
    assert "test" not in {assign_split(fake_sha(i), 0, SplitConfig(0.8, 0.2, 0.0)) for i in range(2000)}
    assert [assign_split(fake_sha(i), 1, ratios) for i in range(200)] != splits[:200]
    # Ratios that add up to a hair under 1 never leave an image without a split.
    assert {assign_split(fake_sha(i), 0, (0.5, 0.4999999, 0.0)) for i in range(3000)} <= {"train", "val"}


def test_adding_images_moves_no_existing_image_to_another_split(tmp_path):
    before = [row(f"{i:06d}", obj()) for i in range(300)]
    after = before + [row(f"new{i:04d}", obj()) for i in range(700)]
    convert(write_manifest(tmp_path / "a.jsonl", before), tmp_path / "raw", tmp_path / "yolo_a", DATA, seed=0)
    convert(write_manifest(tmp_path / "b.jsonl", after), tmp_path / "raw", tmp_path / "yolo_b", DATA, seed=0)
    labels_a = {p.relative_to(tmp_path / "yolo_a") for p in (tmp_path / "yolo_a" / "labels").rglob("*.txt")}
    labels_b = {p.relative_to(tmp_path / "yolo_b") for p in (tmp_path / "yolo_b" / "labels").rglob("*.txt")}
    assert len(labels_a) == 300
    assert {p.parts[1] for p in labels_a} == {"train", "val", "test"}
    assert labels_a <= labels_b  # same split folder for every earlier image
    for split in ("train", "val", "test"):
        listed_a = set((tmp_path / "yolo_a" / f"{split}.txt").read_text().splitlines())
        listed_b = set((tmp_path / "yolo_b" / f"{split}.txt").read_text().splitlines())
        assert listed_a <= listed_b


def test_byte_identical_images_share_a_split_and_imagesets_splits_are_kept(tmp_path):
    same = fake_sha(1)
    rows = [row(f"copy{i}", obj(), sha=same) for i in range(20)]
    rows += [row("listed_test", obj(), split="test"), row("listed_val", obj(), split="val")]
    convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", DATA, seed=3)
    labels = read_labels(tmp_path / "yolo")
    assert len({key.split("/")[0] for key in labels if "copy" in key}) == 1
    assert "test/listed_test" in labels
    assert "val/listed_val" in labels


# --- convert -----------------------------------------------------------------------------------------------


def test_convert_writes_labels_split_lists_and_data_yaml_and_no_image(tmp_path):
    raw = tmp_path / "data" / "raw"
    write_synthetic(raw, images=40, seed=1)
    rows = voc_manifest(raw)
    manifest = write_manifest(tmp_path / "data" / "validated" / "manifest.jsonl", rows)
    out = tmp_path / "data" / "yolo"
    summary = convert(manifest, raw, out, DATA, seed=0)

    assert {p.suffix for p in out.rglob("*") if p.is_file()} == {".txt", ".yaml", ".json"}  # digest.json
    assert (out / "data.yaml").read_text() == (
        "path: .\ntrain: train.txt\nval: val.txt\ntest: test.txt\nnames:\n  0: circle\n  1: square\n  2: triangle\n"
    )
    listed = []
    for split in ("train", "val", "test"):
        lines = (out / f"{split}.txt").read_text().splitlines()
        assert lines == sorted(lines)
        assert all(line.startswith("../raw/JPEGImages/") for line in lines)
        assert all((out / line).is_file() for line in lines)
        assert len(list((out / "labels" / split).glob("*.txt"))) == len(lines)
        listed += lines
    assert len(listed) == 40
    labels = read_labels(out)
    objects = {r.id: len(r.objects) for r in rows}
    assert {key.split("/")[1]: len(lines) for key, lines in labels.items()} == objects
    assert sum(counts.images for counts in summary.splits.values()) == 40
    assert sum(counts.background for counts in summary.splits.values()) == sum(1 for n in objects.values() if not n)
    for lines in labels.values():
        for cls, *box in lines:
            assert cls in (0, 1, 2)
            assert all(0 <= v <= 1 for v in box)
    text = str(summary)
    assert "train" in text
    assert "circle" in text


def test_the_digest_names_every_file_convert_wrote_and_changes_with_one_label(tmp_path):
    import json

    rows = [row("a", obj("square", 11, 6, 51, 26), split="train"), row("b", obj("circle"), split="val")]
    digests = []
    for name, boxes in [("one", rows), ("again", rows), ("moved", [row("a", obj("square", 12, 6, 51, 26),
                                                                        split="train"), rows[1]])]:  # fmt: skip
        out = tmp_path / name
        convert(write_manifest(tmp_path / f"{name}.jsonl", boxes), tmp_path / "raw", out, DATA, seed=0)
        digest = json.loads((out / "digest.json").read_text())
        assert digest["files"] == len([p for p in out.rglob("*") if p.is_file()]) - 1  # all but itself
        digests.append(digest["sha256"])
    assert digests[0] == digests[1] != digests[2]


def test_convert_follows_the_design_formulas_in_the_label_file(tmp_path):
    rows = [row("a", obj("square", 11, 6, 51, 26), obj("triangle", 1, 1, 100, 50), split="train")]
    convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", DATA, seed=0)
    assert (tmp_path / "yolo/labels/train/a.txt").read_text() == (
        "1 0.300000 0.300000 0.400000 0.400000\n"  # ((11 + 51) / 2 - 1) / 100, ((6 + 26) / 2 - 1) / 50
        "2 0.495000 0.490000 0.990000 0.980000\n"
    )
    zero_based = data_config(classes=list(CLASSES), one_based_coords=False)
    convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo0", zero_based, seed=0)
    first = (tmp_path / "yolo0/labels/train/a.txt").read_text().splitlines()[0]
    assert first == "1 0.310000 0.320000 0.400000 0.400000"


def test_class_ids_follow_data_classes_order(tmp_path):
    rows = [row("a", obj("circle"), obj("triangle"), split="train")]
    reordered = data_config(classes=["triangle", "square", "circle"])
    convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", reordered, seed=0)
    assert [line.split()[0] for line in (tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()] == ["2", "0"]
    assert "names:\n  0: triangle\n  1: square\n  2: circle\n" in (tmp_path / "yolo/data.yaml").read_text()


def test_difficult_objects_are_dropped_unless_include_difficult(tmp_path):
    rows = [row("a", obj("circle"), obj("square", difficult=True), split="train")]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    summary = convert(manifest, tmp_path / "raw", tmp_path / "yolo", DATA, seed=0)
    assert len((tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()) == 1
    assert summary.difficult_dropped == 1
    assert "difficult" in str(summary)
    keep = data_config(classes=list(CLASSES), include_difficult=True)
    convert(manifest, tmp_path / "raw", tmp_path / "yolo", keep, seed=0)
    assert len((tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()) == 2


def test_values_are_clamped_into_the_unit_interval(tmp_path):
    # Clipped by validation to the image edge: x 0..1 one-based gives cx = (0.5 - 1) / W < 0.
    rows = [row("a", obj("circle", 0, 0, 1, 1), split="train")]
    summary = convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", DATA, 0)
    assert (tmp_path / "yolo/labels/train/a.txt").read_text() == "0 0.000000 0.000000 0.010000 0.020000\n"
    assert summary.clamped_boxes == 1


def test_background_images_get_an_empty_label_file(tmp_path):
    rows = [row("bg", annotation=None, split="val"), row("a", obj(), split="train")]
    summary = convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", DATA, 0)
    assert (tmp_path / "yolo/labels/val/bg.txt").read_bytes() == b""
    assert summary.splits["val"].background == 1


@pytest.mark.parametrize("frame", ["stored", "rotated"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_labels_of_exif_rotated_images_match_the_frame_opencv_shows(tmp_path, orientation, frame):
    """Orientation 6 with boxes in the stored frame, and its siblings: every orientation, both frames."""
    width, height, rect = 120, 80, (20, 10, 59, 29)  # stored pixels; 40 x 20 rectangle
    data = exif_jpeg(width, height, rect, orientation)
    raw = tmp_path / "raw"
    (raw / "JPEGImages").mkdir(parents=True)
    (raw / "JPEGImages" / "a.jpg").write_bytes(data)
    if frame == "stored":  # VOC one-based pixel indices of the rectangle's first and last pixels
        box = (rect[0] + 1, rect[1] + 1, rect[2] + 1, rect[3] + 1)
    else:  # the annotation tool drew on the displayed frame: find the rectangle there
        x0, y0, x1, y1 = coloured_box(cv2_pixels(data))
        box = (x0 + 1, y0 + 1, x1, y1)
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            row(
                "a",
                obj("square", *box),
                width=width,
                height=height,
                orientation=orientation,
                boxes_frame=frame,
                split="train",
                sha=hashlib.sha256(data).hexdigest(),
            )
        ],
    )
    summary = convert(manifest, raw, tmp_path / "yolo", DATA, seed=0)
    ((cls, cx, cy, w, h),) = read_labels(tmp_path / "yolo")["train/a"]

    import cv2

    shown = cv2.imread(str(raw / "JPEGImages" / "a.jpg"))  # applies the EXIF orientation, as training does
    shown_h, shown_w = shown.shape[:2]
    assert (shown_w, shown_h) == displayed_size(width, height, orientation)
    x0, y0, x1, y1 = coloured_box(shown[..., ::-1])
    # Ultralytics' one-based convention puts the box half a pixel off the pixel edges; JPEG blur adds one.
    label_box = ((cx - w / 2) * shown_w, (cy - h / 2) * shown_h, (cx + w / 2) * shown_w, (cy + h / 2) * shown_h)
    assert label_box == pytest.approx((x0, y0, x1, y1), abs=1.5)
    assert cls == 1
    assert summary.rotated_images == (orientation != 1)


def test_convert_is_deterministic(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic(raw, images=25, seed=2)
    manifest = write_manifest(tmp_path / "validated" / "manifest.jsonl", voc_manifest(raw))
    convert(manifest, raw, tmp_path / "yolo", DATA, seed=0)
    first = tree_bytes(tmp_path / "yolo")
    convert(manifest, raw, tmp_path / "yolo", DATA, seed=0)
    assert tree_bytes(tmp_path / "yolo") == first
    convert(manifest, raw, tmp_path / "yolo_again", DATA, seed=0)  # a sibling: same relative paths
    assert tree_bytes(tmp_path / "yolo_again") == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_a_failing_convert_leaves_the_previous_output_untouched(tmp_path):
    good = write_manifest(tmp_path / "good.jsonl", [row("a", obj(), split="train"), row("b", obj(), split="val")])
    convert(good, tmp_path / "raw", tmp_path / "yolo", DATA, 0)
    before = tree_bytes(tmp_path / "yolo")
    bad_rows = [row(f"{i:03d}", obj()) for i in range(50)] + [row("zzz", obj("hexagon"))]
    with pytest.raises(VisError, match="hexagon"):
        convert(write_manifest(tmp_path / "bad.jsonl", bad_rows), tmp_path / "raw", tmp_path / "yolo", DATA, 0)
    assert tree_bytes(tmp_path / "yolo") == before
    with pytest.raises(VisError, match="hexagon"):
        convert(tmp_path / "bad.jsonl", tmp_path / "raw", tmp_path / "fresh", DATA, 0)
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_empty_val_split_is_written_with_a_clear_warning(tmp_path):
    rows = [row(f"{i}", obj(), split="train") for i in range(3)]
    summary = convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", DATA, 0)
    assert (tmp_path / "yolo" / "val.txt").read_text() == ""
    assert "val:" in (tmp_path / "yolo" / "data.yaml").read_text()
    assert "warning: the val split is empty" in str(summary)


def test_a_test_split_is_listed_only_when_used(tmp_path):
    rows = [row(f"{i:04d}", obj()) for i in range(200)]
    three_way = data_config(classes=list(CLASSES), split=SplitConfig(0.6, 0.2, 0.2))
    convert(write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "raw", tmp_path / "yolo", three_way, 0)
    assert "test: test.txt\n" in (tmp_path / "yolo" / "data.yaml").read_text()
    assert (tmp_path / "yolo" / "test.txt").read_text().count("\n") > 20


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "run the validate stage first"), ("not json\n", "not a manifest row"), ('{"id": "a"}\n', "manifest row")],
)
def test_a_missing_or_broken_manifest_is_a_clear_error(tmp_path, content, message):
    manifest = tmp_path / "manifest.jsonl"
    if content is not None:
        manifest.write_text(content)
    with pytest.raises(VisError, match=message):
        convert(manifest, tmp_path / "raw", tmp_path / "yolo", DATA, 0)


@pytest.mark.integration
def test_convert_sample_and_view_import_no_torch_ultralytics_or_cv2(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic(raw, images=6)
    manifest = write_manifest(tmp_path / "manifest.jsonl", voc_manifest(raw))
    code = f"""
import sys
from pathlib import Path
from visapp.composition import default_params
from visapp.dataset.convert import convert
from visapp.dataset.views import build_view
from visapp.dataset.synthetic import write_synthetic
write_synthetic(Path({str(tmp_path / "raw2")!r}), images=2)
convert(Path({str(manifest)!r}), Path({str(raw)!r}), Path({str(tmp_path / "yolo")!r}), default_params().data, 0)
build_view(Path({str(tmp_path / "yolo")!r}), Path({str(raw)!r}), Path({str(tmp_path / "view")!r}), "link")
print(sorted(m for m in ("torch", "ultralytics", "cv2") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
