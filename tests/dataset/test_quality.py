"""Dataset-quality checks (`visapp.dataset.quality`): each problem planted in a generated dataset is found, with
its code, severity warning and path; a clean generated dataset has no finding; measurements survive the
reuse store and the process pool; findings never reject a sample nor fail the stage."""

from __future__ import annotations

import dataclasses
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from factory import DATA, Obj, data_config, write_image_sets, write_sample
from visapp.composition import default_params
from visapp.dataset.image_measures import ImageMeasurement, measure_image
from visapp.dataset.quality import QualityRules, first_neighbours
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.manifest import MANIFEST_FILE
from visapp.formats.report import CODES, QUALITY_CODES, WARNING, has_errors

pytestmark = pytest.mark.unit

SIZE = 128  # px: at 1/8 scale 16 px, enough to judge blur
CLEAN_IMAGES = 12  # with one object of each class an image: 12 objects a class, above quality.min_class_objects
# Three objects an image, apart from each other and from the edges, of slightly different sizes.
PLACES = ((8, 10), (48, 60), (88, 20))


def rules(**changes) -> QualityRules:
    params = default_params()
    return QualityRules(dataclasses.replace(params.quality, **changes), params.train.imgsz, params.seed)


def picture(seed: int, size: tuple[int, int] = (SIZE, SIZE), scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """A textured RGB picture of its own (random blocks of 8 px): sharp, mid-grey, a pHash far from others'."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 226, (size[1] // 8 + 1, size[0] // 8 + 1, 3)).astype(np.float64)
    pixels = np.kron(blocks, np.ones((8, 8, 1)))[: size[1], : size[0]]
    return np.clip(pixels * scale + offset, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def objects(index: int) -> list[Obj]:
    grow = index % 4  # sizes vary a little, as real boxes do
    return [
        Obj(name, (x, y, x + 24 + grow, y + 22 + grow))
        for name, (x, y) in zip(("circle", "square", "triangle"), PLACES, strict=True)
    ]


def clean_dataset(raw, images: int = CLEAN_IMAGES) -> None:
    for index in range(images):
        write_sample(raw, f"{index:03d}", fmt="png", image_size=(SIZE, SIZE), image=encode(picture(index)),
                     objects=objects(index))  # fmt: skip


def check(raw, data=DATA, reuse_dir=None, **changes):
    return validate_dataset(raw, data, reuse_dir=reuse_dir, quality=rules(**changes))


def findings(result, code: str | None = None) -> list[dict]:
    found = [i for i in result.report["issues"] if i["code"] in QUALITY_CODES]
    return [i for i in found if code is None or i["code"] == code]


def found(result, code: str) -> list[tuple[str, str]]:
    """(path, severity) of each finding of a code."""
    return [(i["path"], i["severity"]) for i in findings(result, code)]


# ---------------------------------------------------------------- clean


def test_a_clean_generated_dataset_has_no_quality_finding(tmp_path):
    clean_dataset(tmp_path)
    result = check(tmp_path)
    assert result.report["rejected"] == 0
    assert findings(result) == []


def test_quality_codes_are_registered_as_warnings():
    assert len(QUALITY_CODES) == 16
    assert all(CODES[code].severity == WARNING for code in QUALITY_CODES)


# ---------------------------------------------------------------- boxes


def test_same_class_boxes_overlapping_are_a_double_annotation(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "double", fmt="png", image=encode(picture(100)), image_size=(SIZE, SIZE),
                 objects=[*objects(0), Obj("circle", (9, 10, 32, 32))])  # fmt: skip
    result = check(tmp_path)
    assert found(result, "box_duplicate") == [("Annotations/double.xml", WARNING)]
    assert "object 1 (circle) and object 4 (circle)" in findings(result, "box_duplicate")[0]["message"]
    assert found(result, "box_class_conflict") == []


def test_one_box_with_two_classes_is_a_class_conflict(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "twice", fmt="png", image=encode(picture(100)), image_size=(SIZE, SIZE),
                 objects=[*objects(0), Obj("square", (8, 10, 32, 32))])  # fmt: skip
    result = check(tmp_path)
    assert found(result, "box_class_conflict") == [("Annotations/twice.xml", WARNING)]
    assert found(result, "box_duplicate") == []


def test_a_box_below_min_box_px_at_train_imgsz_is_tiny(tmp_path):
    clean_dataset(tmp_path)
    # 640 px wide, scaled to imgsz 160: a 10 px box becomes 2.5 px, below 3.
    write_sample(tmp_path, "wide", fmt="png", image=encode(picture(100, (640, 480))), image_size=(640, 480),
                 objects=[*objects(0), Obj("circle", (300, 300, 310, 340))])  # fmt: skip
    result = check(tmp_path)
    assert found(result, "box_tiny") == [("Annotations/wide.xml", WARNING)]
    assert "object 4 (circle) 2.5x10.0 px" in findings(result, "box_tiny")[0]["message"]
    assert found(check(tmp_path, min_box_px=2), "box_tiny") == []


def test_box_size_and_aspect_outliers_of_a_class(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "odd", fmt="png", image=encode(picture(100)), image_size=(SIZE, SIZE),
                 objects=[Obj("circle", (4, 4, 124, 124)), Obj("square", (10, 60, 70, 68))])  # fmt: skip
    result = check(tmp_path, outlier_min_boxes=10)
    assert found(result, "box_size_outlier") == [("Annotations/odd.xml", WARNING)]
    assert "object 1 (circle) larger than usual" in findings(result, "box_size_outlier")[0]["message"]
    assert found(result, "box_aspect_outlier") == [("Annotations/odd.xml", WARNING)]
    assert "object 2 (square) wider than usual" in findings(result, "box_aspect_outlier")[0]["message"]
    # Too few boxes of a class (13 < 30 by default): not judged.
    assert found(check(tmp_path), "box_size_outlier") == []


# ---------------------------------------------------------------- images


def test_near_duplicates_within_a_split_and_across_splits(tmp_path):
    clean_dataset(tmp_path)
    near = encode(picture(3, offset=12.0), "JPEG")  # 000003 a little brighter, as a JPEG: other bytes
    write_sample(tmp_path, "copy_same", image=near, image_size=(SIZE, SIZE), objects=objects(3))
    write_sample(tmp_path, "copy_other", image=encode(picture(3, scale=0.9), "JPEG"), image_size=(SIZE, SIZE),
                 objects=objects(3))  # fmt: skip
    ids = [f"{i:03d}" for i in range(CLEAN_IMAGES)]
    write_image_sets(tmp_path, {"train": [*ids[:9], "copy_same"], "val": [*ids[9:], "copy_other"]})
    result = check(tmp_path)
    assert found(result, "image_near_duplicate") == [("JPEGImages/copy_same.jpg", WARNING)]
    assert "looks like JPEGImages/003.png" in findings(result, "image_near_duplicate")[0]["message"]
    leaks = {i["path"]: i["message"] for i in findings(result, "near_duplicate_leak")}
    assert "in val, looks like JPEGImages/003.png in train" in leaks["JPEGImages/copy_other.jpg"]
    # copy_same (train) resembles copy_other (val), which comes earlier by path, as well
    assert "in train, looks like JPEGImages/copy_other.jpg in val" in leaks["JPEGImages/copy_same.jpg"]
    assert {i["severity"] for i in findings(result)} == {WARNING}
    assert result.report["rejected"] == 0


def test_byte_identical_images_are_not_near_duplicates_too(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "same", fmt="png", image=encode(picture(3)), image_size=(SIZE, SIZE), objects=objects(3))
    result = check(tmp_path)
    assert "duplicate_image" in result.report["by_code"]
    assert findings(result, "image_near_duplicate") == []


def test_dark_bright_blurry_and_odd_aspect_ratio_images(tmp_path):
    clean_dataset(tmp_path)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    glow = 90 + 20 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * 30**2))  # a faint blob, no detail at all
    smooth = np.repeat(glow[:, :, None], 3, axis=2).astype(np.uint8)
    planted = {
        "dark": picture(101, scale=0.1),
        "bright": picture(102, scale=0.1, offset=235),
        "blurry": smooth,
        "panorama": picture(104, (SIZE * 5, SIZE)),
    }
    for stem, pixels in planted.items():
        size = (pixels.shape[1], pixels.shape[0])
        write_sample(tmp_path, stem, fmt="png", image=encode(pixels), image_size=size, objects=objects(0))
    result = check(tmp_path)
    assert found(result, "image_dark") == [("JPEGImages/dark.png", WARNING)]
    assert found(result, "image_bright") == [("JPEGImages/bright.png", WARNING)]
    assert found(result, "image_blurry") == [("JPEGImages/blurry.png", WARNING)]  # not the dark or bright ones
    assert found(result, "image_aspect_ratio") == [("JPEGImages/panorama.png", WARNING)]


def test_a_png_and_a_jpeg_of_one_picture_measure_alike():
    pixels = picture(7)
    grey = {fmt: np.array(Image.open(io.BytesIO(encode(pixels, fmt))).convert("L")) for fmt in ("PNG", "JPEG")}
    jpeg_reduced = cv2.imdecode(np.frombuffer(encode(pixels, "JPEG"), np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    png = measure_image(grey["PNG"], (SIZE, SIZE))  # full size: reduced to 1/8 first
    jpeg = measure_image(jpeg_reduced, (SIZE, SIZE))  # already at 1/8
    assert abs(png.brightness - jpeg.brightness) < 2
    assert bin(png.phash ^ jpeg.phash).count("1") <= 4
    assert png.sharpness is not None and png.sharpness > 100
    assert measure_image(grey["PNG"][:64, :64], (64, 64)).sharpness is None  # 8x8 at 1/8: too small to judge


def test_near_duplicates_name_the_first_earlier_look_alike_per_split_never_a_byte_identical_twin():
    hashes = [0b0000, 0b0111, 0b1111_0000, 0b0001, 0b0011, 0b0011]
    groups = [0, 0, 0, 1, 0, 0]
    twins = [0, 1, 2, 3, 4, 4]  # the last two: the same bytes
    assert first_neighbours(hashes, groups, twins, 3) == [
        (None, None),
        ((0, 3), None),
        (None, None),
        (None, (0, 1)),  # another split: a leak
        ((0, 2), (3, 1)),
        ((0, 2), (3, 1)),  # not its twin at distance 0
    ]
    assert first_neighbours([], [], [], 10) == []


def test_flat_images_have_no_perceptual_hash_and_are_never_near_duplicates():
    import numpy as np

    flat = [measure_image(np.full((8, 8), level, np.uint8), (8, 8)) for level in (10, 128, 250)]
    assert [m.phash for m in flat] == [None, None, None]
    assert ImageMeasurement.from_values(flat[0].to_values()) == flat[0]


def test_measurements_round_trip_through_json():
    measured = ImageMeasurement(12.3456, None, (1 << 64) - 2)
    assert ImageMeasurement.from_values(json.loads(json.dumps(measured.to_values()))) == ImageMeasurement(
        12.346, None, (1 << 64) - 2
    )


# ---------------------------------------------------------------- the dataset as a whole


def _edge_boxes(raw, xmin: int, xmax_of) -> None:
    for index in range(6):
        write_sample(raw, f"edge{index}", fmt="png", image=encode(picture(200 + index)), image_size=(SIZE, SIZE),
                     objects=[Obj("circle", (xmin, 40, xmax_of(index), 70))])  # fmt: skip


def test_zero_based_boxes_against_one_based_coords_are_reported_once(tmp_path):
    clean_dataset(tmp_path)
    _edge_boxes(tmp_path, 0, lambda index: 30 + index)
    result = check(tmp_path)
    assert found(result, "coords_convention") == [(".", WARNING)]
    assert "look 0-based" in findings(result, "coords_convention")[0]["message"]
    assert found(check(tmp_path, data_config(classes=DATA.classes, one_based_coords=False)), "coords_convention") == []


def test_one_based_boxes_against_zero_based_coords_are_reported(tmp_path):
    clean_dataset(tmp_path)
    _edge_boxes(tmp_path, 1, lambda index: SIZE)
    zero_based = data_config(classes=DATA.classes, one_based_coords=False)
    assert "look 1-based" in findings(check(tmp_path, zero_based), "coords_convention")[0]["message"]
    assert found(check(tmp_path), "coords_convention") == []


def test_class_names_differing_only_by_case_or_spaces(tmp_path):
    clean_dataset(tmp_path)
    result = check(tmp_path, data_config(classes=["circle", "square", "triangle", "Circle", "tri angle"]))
    assert found(result, "class_name_variant") == [(".", WARNING)]
    assert "'circle', 'Circle'" in findings(result, "class_name_variant")[0]["message"]


def test_rare_and_imbalanced_classes(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "extra", fmt="png", image=encode(picture(300)), image_size=(SIZE, SIZE),
                 objects=[Obj("star", (10, 10, 40, 40))])  # fmt: skip
    data = data_config(classes=[*DATA.classes, "star"])
    result = check(tmp_path, data)
    assert [i["message"].split(" has")[0] for i in findings(result, "class_rare")] == ["'star'"]
    assert found(result, "class_imbalance") == []  # 12 / 1 is below 20
    imbalanced = findings(check(tmp_path, data, max_imbalance=10), "class_imbalance")
    assert [i["path"] for i in imbalanced] == ["."] and "'star' 1: 12.0 times fewer" in imbalanced[0]["message"]


def test_a_class_missing_from_a_split(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "valonly", fmt="png", image=encode(picture(300)), image_size=(SIZE, SIZE),
                 objects=[Obj("circle", (10, 10, 40, 40))])  # fmt: skip
    ids = [f"{i:03d}" for i in range(CLEAN_IMAGES)]
    write_image_sets(tmp_path, {"train": ids, "val": ["valonly"]})
    result = check(tmp_path)
    messages = sorted(i["message"] for i in findings(result, "class_split_missing"))
    assert [m.split(" has")[0] for m in messages] == ["'square'", "'triangle'"]
    assert all("none in val" in m for m in messages)


# ---------------------------------------------------------------- switches, reuse, the pool, the stage


def test_disabled_or_absent_quality_checks_find_nothing(tmp_path):
    clean_dataset(tmp_path)
    write_sample(tmp_path, "dark", fmt="png", image=encode(picture(101, scale=0.1)), image_size=(SIZE, SIZE),
                 objects=objects(0))  # fmt: skip
    assert found(check(tmp_path), "image_dark")
    assert findings(check(tmp_path, enabled=False)) == []
    assert findings(validate_dataset(tmp_path, DATA)) == []


def test_measurements_are_kept_in_the_reuse_store(tmp_path, validation_work):
    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    clean_dataset(raw)
    write_sample(raw, "dark", fmt="png", image=encode(picture(101, scale=0.1)), image_size=(SIZE, SIZE),
                 objects=objects(0))  # fmt: skip
    assert findings(check(raw, reuse_dir=reuse, enabled=False)) == []  # stored without measurements
    samples = len(validation_work()["checked"])
    first = check(raw, reuse_dir=reuse)  # measuring changes the key: checked again, measured
    assert len(validation_work()["checked"]) == samples
    again = check(raw, reuse_dir=reuse, dark_mean=30)  # a threshold changes nothing stored: all reused
    assert validation_work()["checked"] == []
    assert found(first, "image_dark") == found(again, "image_dark") == [("JPEGImages/dark.png", WARNING)]
    assert first.report == check(raw).report


def test_findings_never_reject_nor_stop_on_error_fail(tmp_path):
    clean_dataset(tmp_path / "raw")
    write_sample(tmp_path / "raw", "dark", fmt="png", image=encode(picture(101, scale=0.1)), image_size=(SIZE, SIZE),
                 objects=[*objects(0), Obj("circle", (8, 10, 32, 32))])  # fmt: skip
    result = check(tmp_path / "raw")
    assert {"image_dark", "box_duplicate"} <= set(result.report["by_code"])
    assert result.report["rejected"] == 0 and not has_errors(result.report)
    write_validation(result, tmp_path / "out", on_error="fail")
    assert len((tmp_path / "out" / MANIFEST_FILE).read_text().splitlines()) == CLEAN_IMAGES + 1


@pytest.mark.integration
def test_measurements_come_back_from_the_process_pool(tmp_path, monkeypatch):
    clean_dataset(tmp_path, images=130)  # two workers of 64 samples at least
    write_sample(tmp_path, "dark", fmt="png", image=encode(picture(1001, scale=0.1)), image_size=(SIZE, SIZE),
                 objects=objects(0))  # fmt: skip
    monkeypatch.setenv("VISAPP_WORKERS", "2")
    pooled = check(tmp_path)
    monkeypatch.setenv("VISAPP_WORKERS", "1")
    assert pooled.report == check(tmp_path).report
    assert found(pooled, "image_dark") == [("JPEGImages/dark.png", WARNING)]


def test_metadata_counts_the_findings_and_draws_where_classes_lie(tmp_path):
    from visapp.dataset.convert import convert
    from visapp.dataset.statistics import build_metadata
    from visapp.formats.report import REPORT_FILE

    raw, validated = tmp_path / "raw", tmp_path / "validated"
    clean_dataset(raw)
    write_sample(raw, "dark", fmt="png", image=encode(picture(101, scale=0.1)), image_size=(SIZE, SIZE),
                 objects=objects(0))  # fmt: skip
    write_validation(check(raw), validated, on_error="fail")
    convert(validated / MANIFEST_FILE, raw, tmp_path / "yolo", DATA, seed=0)
    meta = build_metadata(validated / MANIFEST_FILE, tmp_path / "yolo", raw, tmp_path / "meta", list(DATA.classes),
                          report_path=validated / REPORT_FILE)  # fmt: skip
    assert meta["quality"]["findings"] == 1 and meta["quality"]["by_code"]["image_dark"] == 1
    assert set(meta["quality"]["by_code"]) == set(QUALITY_CODES)
    circles = np.array(meta["annotation_heatmap"]["classes"]["circle"])
    assert circles.sum() == CLEAN_IMAGES + 1 and circles[1, 1] == CLEAN_IMAGES + 1  # centres near (0.16, 0.17)
    assert all(share == 1.0 for split in meta["class_coverage"].values() for share in split.values())
    assert (tmp_path / "meta" / "annotations.png").stat().st_size > 1000
    # flagged.png draws the flagged sample: a dark image, so a cell of dark pixels.
    from PIL import Image

    from visapp.dataset.statistics import flagged_paths

    assert flagged_paths(json.loads((validated / REPORT_FILE).read_text())) == {"JPEGImages/dark.png": "image_dark"}
    with Image.open(tmp_path / "meta" / "flagged.png") as figure:
        assert (np.asarray(figure.convert("L")) < 30).sum() > 2000
