"""visapp.dataset.validate: every issue code on a crafted sample, the outputs' exact shape, streaming."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import (
    BILLION_LAUGHS,
    DTD_ONLY,
    EXTERNAL_ENTITY,
    Obj,
    annotation_xml,
    data_config,
    image_bytes,
    truncated_jpeg,
    write_image_sets,
    write_sample,
)
from visapp.config import DataConfig
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.errors import VisError
from visapp.formats.report import CODES, format_summary

pytestmark = pytest.mark.unit

DATA = data_config(classes=["circle", "square", "triangle"])


def check(raw: Path, data: DataConfig = DATA, **changes):
    """Validate; the manifest rows as plain dicts (as manifest.jsonl holds them)."""
    result = validate_dataset(raw, replace(data, **changes) if changes else data)
    return replace(result, rows=[asdict(row) for row in result.rows])


DATASET_CODES = ("class_absent", "dataset_empty")  # about the dataset as a whole, not one sample


def issues(result, code: str | None = None) -> list[dict]:
    """The issues with `code`, or all the samples' issues (not those about the dataset as a whole)."""
    return [
        i for i in result.report["issues"] if i["code"] == code or (code is None and i["code"] not in DATASET_CODES)
    ]


def only_issue(result) -> dict:
    [issue] = issues(result)
    return issue


def row(result, image: str) -> dict | None:
    return next((r for r in result.rows if r["image"] == image), None)


# ---------------------------------------------------------------- accepted samples and the manifest row


def test_tidy_sample_gives_the_documented_manifest_row(tmp_path):
    write_sample(tmp_path, "000001", objects=[Obj("square", (12, 30.5, 60, 47), difficult=1, truncated=1)])
    result = check(tmp_path)
    assert (result.report["samples"], result.report["accepted"], result.report["rejected"]) == (1, 1, 0)
    assert issues(result) == []
    assert [i["message"][:35] for i in issues(result, "class_absent")] == [
        "data.classes lists 'circle', but no",
        "data.classes lists 'triangle', but ",
    ]
    [manifest_row] = result.rows
    assert manifest_row == {
        "id": "000001",
        "image": "JPEGImages/000001.jpg",
        "annotation": "Annotations/000001.xml",
        "sha256": manifest_row["sha256"],
        "format": "jpeg",
        "width": 64,
        "height": 48,
        "orientation": 1,
        "boxes_frame": "stored",
        "split": None,
        "objects": [
            {
                "name": "square",
                "class_id": 1,
                "xmin": 12.0,
                "ymin": 30.5,
                "xmax": 60.0,
                "ymax": 47.0,
                "difficult": True,
                "truncated": True,
            }
        ],
    }
    import hashlib

    assert manifest_row["sha256"] == hashlib.sha256((tmp_path / "JPEGImages/000001.jpg").read_bytes()).hexdigest()


def test_untidy_but_valid_voc_is_accepted_without_errors(tmp_path):
    extra = "<part><name>hand</name><bndbox><xmin>1</xmin></bndbox></part><actions><a>1</a></actions><point/>"
    objects = [
        Obj("circle", ("10.25", "5.5", "40.75", "30"), order=("ymax", "xmax", "ymin", "xmin")),
        Obj("triangle", (1, 2, 20, 21), difficult="", truncated="", pose="", extra=extra),
        Obj("square", (3, 4, 50, 40), difficult=None, truncated=None, pose=None),
    ]
    write_sample(tmp_path, "a", objects=objects)
    result = check(tmp_path)
    assert result.report["rejected"] == 0 and not issues(result)
    boxes = [(o["name"], o["xmin"], o["ymax"], o["difficult"]) for o in result.rows[0]["objects"]]
    assert boxes == [("circle", 10.25, 30.0, False), ("triangle", 1.0, 21.0, False), ("square", 3.0, 40.0, False)]


@pytest.mark.parametrize(
    ("fmt", "mode"), [("png", "L"), ("png", "P"), ("png", "RGBA"), ("png", "LA"), ("bmp", "RGB"), ("webp", "RGB")]
)
def test_grayscale_palette_rgba_bmp_webp_are_accepted(tmp_path, fmt, mode):
    write_sample(tmp_path, "a", fmt=fmt, mode=mode)
    result = check(tmp_path)
    assert result.rows[0]["format"] == fmt and not issues(result)


def test_png_named_jpg_is_accepted_as_png(tmp_path):
    write_sample(tmp_path, "a", fmt="png", image_ext=".jpg")
    result = check(tmp_path)
    assert (result.rows[0]["image"], result.rows[0]["format"]) == ("JPEGImages/a.jpg", "png")
    assert not issues(result)


# ---------------------------------------------------------------- image codes


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not an image", b"\xff\xd8\xff" + b"\x00" * 80 + b"\xff\xd9"],
    ids=["empty", "not-an-image", "fails-to-decode"],
)
def test_image_unreadable_rejects_the_sample(tmp_path, data):
    write_sample(tmp_path, "a", image=data)
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("image_unreadable", "error", "JPEGImages/a.jpg")
    assert result.rows == [] and result.report["rejected"] == 1


def test_truncated_jpeg_is_image_truncated(tmp_path):
    write_sample(tmp_path, "a", image=truncated_jpeg())
    result = check(tmp_path)
    assert only_issue(result)["code"] == "image_truncated" and result.rows == []


def test_image_missing_for_an_annotation_without_image(tmp_path):
    write_sample(tmp_path, "a", with_image=False)
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("image_missing", "error", "Annotations/a.xml")
    assert result.report["samples"] == 1 and result.report["rejected"] == 1


def test_annotation_missing_is_a_background_warning_with_allow_background(tmp_path):
    write_sample(tmp_path, "bg", with_annotation=False)
    result = check(tmp_path, allow_background=True)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("annotation_missing", "warning", "JPEGImages/bg.jpg")
    assert result.rows[0]["annotation"] is None and result.rows[0]["objects"] == []


def test_annotation_missing_is_an_error_without_allow_background(tmp_path):
    write_sample(tmp_path, "bg", with_annotation=False)
    result = check(tmp_path, allow_background=False)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"]) == ("annotation_missing", "error")
    assert result.rows == []


def test_annotation_with_no_objects_is_an_accepted_background(tmp_path):
    write_sample(tmp_path, "empty", objects=[])
    result = check(tmp_path)
    assert not issues(result) and result.rows[0]["objects"] == []


# ---------------------------------------------------------------- XML codes


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, DTD_ONLY], ids=["bomb", "external", "dtd"])
def test_unsafe_xml_is_refused(tmp_path, xml):
    write_sample(tmp_path, "a", xml=xml)
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("xml_unsafe", "error", "Annotations/a.xml")
    assert result.rows == []


@pytest.mark.parametrize(
    "xml",
    [b"<annotation><object>", b"", annotation_xml(root="doc"), b"<?xml version='1.0'?><annotation"],
    ids=["unclosed", "empty", "wrong-root", "cut"],
)
def test_xml_malformed(tmp_path, xml):
    write_sample(tmp_path, "a", xml=xml)
    assert only_issue(check(tmp_path))["code"] == "xml_malformed"


# ---------------------------------------------------------------- size and EXIF


def test_size_mismatch(tmp_path):
    write_sample(tmp_path, "a", size=(640, 480))
    issue = only_issue(check(tmp_path))
    assert issue["code"] == "size_mismatch" and "640x480" in issue["message"] and "64x48" in issue["message"]


@pytest.mark.parametrize("size", [None, (0, 0)], ids=["absent", "zero"])
def test_size_missing_uses_the_decoded_size(tmp_path, size):
    write_sample(tmp_path, "a", size=size, objects=[Obj("circle", (1, 1, 63, 47))])
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("size_missing", "warning", "Annotations/a.xml")
    assert (result.rows[0]["width"], result.rows[0]["height"], result.rows[0]["boxes_frame"]) == (64, 48, "stored")


def test_size_missing_still_checks_bounds_against_the_decoded_size(tmp_path):
    write_sample(tmp_path, "a", size=None, objects=[Obj("circle", (1, 1, 100, 47))])
    assert {i["code"] for i in issues(check(tmp_path))} == {"size_missing", "bbox_out_of_bounds"}


def test_exif_orientation_6_with_stored_size_boxes_refer_to_stored_pixels(tmp_path):
    # stored 64x48, shown 48x64; <size> says 64x48: the boxes are in the stored frame
    write_sample(tmp_path, "a", exif_orientation=6, objects=[Obj("circle", (40, 5, 60, 40))])
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("exif_rotated", "warning", "JPEGImages/a.jpg")
    r = result.rows[0]
    assert (r["width"], r["height"], r["orientation"], r["boxes_frame"]) == (64, 48, 6, "stored")


def test_exif_orientation_6_with_rotated_size_boxes_refer_to_the_rotated_frame(tmp_path):
    # <size> 48x64 = the displayed frame: a box reaching y=60 is inside it (it would be outside 64x48)
    write_sample(tmp_path, "a", exif_orientation=6, size=(48, 64), objects=[Obj("circle", (5, 40, 45, 60))])
    result = check(tmp_path)
    assert [i["code"] for i in issues(result)] == ["exif_rotated"]
    assert (result.rows[0]["width"], result.rows[0]["height"], result.rows[0]["boxes_frame"]) == (64, 48, "rotated")


def test_bounds_use_the_rotated_frame(tmp_path):
    write_sample(tmp_path, "a", exif_orientation=6, size=(48, 64), objects=[Obj("circle", (5, 5, 60, 20))])
    assert {i["code"] for i in issues(check(tmp_path))} == {"exif_rotated", "bbox_out_of_bounds"}


def test_exif_rotated_size_matching_neither_frame_is_a_mismatch(tmp_path):
    write_sample(tmp_path, "a", exif_orientation=6, size=(50, 50))
    assert {i["code"] for i in issues(check(tmp_path))} == {"exif_rotated", "size_mismatch"}


@pytest.mark.parametrize("value", [0, 9, 300])
def test_invalid_exif_orientation_is_accepted_as_1(tmp_path, value):
    write_sample(tmp_path, "a", exif_orientation=value)
    result = check(tmp_path)
    assert not issues(result) and result.rows[0]["orientation"] == 1


# ---------------------------------------------------------------- objects


def test_class_unknown(tmp_path):
    write_sample(tmp_path, "a", objects=[Obj("circle"), Obj("zebra")])
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("class_unknown", "error", "Annotations/a.xml")
    assert "zebra" in issue["message"] and result.rows == []  # the whole sample, not just the zebra


def test_object_without_name_is_class_unknown(tmp_path):
    write_sample(tmp_path, "a", objects=[Obj(name=None)])
    assert only_issue(check(tmp_path))["code"] == "class_unknown"


def test_empty_classes_accept_every_name_with_ids_in_sorted_order(tmp_path):
    write_sample(tmp_path, "a", objects=[Obj("zebra"), Obj("ant")])
    write_sample(tmp_path, "b", objects=[Obj("moose")])
    result = check(tmp_path, classes=[])
    assert not issues(result)
    ids = {o["name"]: o["class_id"] for r in result.rows for o in r["objects"]}
    assert ids == {"ant": 0, "moose": 1, "zebra": 2}


@pytest.mark.parametrize(
    "box",
    [
        (10, 10, None, 30),  # missing coordinate
        (10, "ten", 40, 30),  # non-numeric
        (10, 10, 40, "nan"),  # not finite
        (40, 10, 40, 30),  # xmin == xmax
        (50, 10, 40, 30),  # xmin > xmax
        (10, 30, 40, 30),  # ymin == ymax
        None,  # no <bndbox>
    ],
    ids=["missing", "non-numeric", "nan", "xmin=xmax", "xmin>xmax", "ymin=ymax", "no-bndbox"],
)
def test_bbox_invalid(tmp_path, box):
    write_sample(tmp_path, "a", objects=[Obj("circle", (1, 1, 5, 5)), Obj("circle", box)])
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"]) == ("bbox_invalid", "error")
    assert "object 2" in issue["message"] and result.rows == []


@pytest.mark.parametrize(
    ("box", "tolerance", "code"),
    [
        ((-2, 0, 30, 30), 2, "bbox_clipped"),  # exactly the tolerance outside
        ((-2.01, 0, 30, 30), 2, "bbox_out_of_bounds"),  # just past it
        ((10, 10, 66, 48), 2, "bbox_clipped"),  # right edge (W = 64)
        ((10, 10, 66.5, 48), 2, "bbox_out_of_bounds"),
        ((10, 10, 60, 50), 2, "bbox_clipped"),  # bottom edge (H = 48)
        ((10, 10, 60, 50.5), 2, "bbox_out_of_bounds"),
        ((0, 0, 64, 48), 0, None),  # touching the edges is inside
        ((0, 0, 64.5, 48), 0, "bbox_out_of_bounds"),
        ((10, 10, 74, 48), 10, "bbox_clipped"),  # data.bbox_tolerance_px is honoured
    ],
)
def test_bbox_clipped_vs_out_of_bounds_at_the_tolerance(tmp_path, box, tolerance, code):
    write_sample(tmp_path, "a", objects=[Obj("circle", box)])
    result = check(tmp_path, bbox_tolerance_px=tolerance)
    assert [i["code"] for i in issues(result)] == ([code] if code else [])
    assert (result.rows == []) == (code == "bbox_out_of_bounds")


def test_clipped_box_is_written_clipped(tmp_path):
    write_sample(tmp_path, "a", objects=[Obj("circle", (-1.5, -0.5, 65, 49))])
    result = check(tmp_path)
    assert only_issue(result)["severity"] == "warning"
    obj = result.rows[0]["objects"][0]
    assert (obj["xmin"], obj["ymin"], obj["xmax"], obj["ymax"]) == (0.0, 0.0, 64.0, 48.0)


def test_box_entirely_outside_within_tolerance_is_out_of_bounds(tmp_path):
    write_sample(tmp_path, "a", objects=[Obj("circle", (64.5, 10, 65.5, 20))])  # a sliver beyond the right edge
    assert only_issue(check(tmp_path))["code"] == "bbox_out_of_bounds"


# ---------------------------------------------------------------- duplicates and splits


def test_duplicate_image_is_a_warning_naming_both(tmp_path):
    image, _ = write_sample(tmp_path, "a")
    write_sample(tmp_path, "b", image=image.read_bytes())
    result = check(tmp_path)
    issue = only_issue(result)
    assert (issue["code"], issue["severity"], issue["path"]) == ("duplicate_image", "warning", "JPEGImages/b.jpg")
    assert "JPEGImages/a.jpg" in issue["message"]
    assert len(result.rows) == 2


def test_splits_come_from_image_sets_with_comments(tmp_path):
    for stem in ("a", "b", "c"):
        write_sample(tmp_path, stem)
    write_image_sets(tmp_path, {"train": ["a", "# b is not listed here"], "val": ["c"]})
    result = check(tmp_path)
    assert {r["id"]: r["split"] for r in result.rows} == {"a": "train", "b": None, "c": "val"}
    assert not issues(result)


def test_split_leak_identical_images_in_two_splits_rejects_both(tmp_path):
    image, _ = write_sample(tmp_path, "a")
    write_sample(tmp_path, "b", image=image.read_bytes())
    write_sample(tmp_path, "c")
    write_image_sets(tmp_path, {"train": ["a", "c"], "val": ["b"]})
    result = check(tmp_path)
    leaks = issues(result, "split_leak")
    assert sorted(i["path"] for i in leaks) == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]
    assert all(i["severity"] == "error" and "JPEGImages/a.jpg" in i["message"] for i in leaks)
    assert [r["id"] for r in result.rows] == ["c"]
    assert result.report["rejected"] == 2


def test_split_leak_one_id_listed_in_two_splits(tmp_path):
    write_sample(tmp_path, "a")
    write_image_sets(tmp_path, {"train": ["a"], "test": ["a"]})
    result = check(tmp_path)
    assert only_issue(result)["code"] == "split_leak" and result.rows == []


def test_unlisted_copy_follows_its_listed_twin(tmp_path):
    image, _ = write_sample(tmp_path, "a")
    write_sample(tmp_path, "b", image=image.read_bytes())
    write_image_sets(tmp_path, {"val": ["a"]})
    result = check(tmp_path)
    assert [i["code"] for i in issues(result)] == ["duplicate_image"]
    assert {r["id"]: r["split"] for r in result.rows} == {"a": "val", "b": "val"}


def test_two_images_with_one_id_do_not_both_reach_the_manifest(tmp_path):
    write_sample(tmp_path, "a", fmt="png", filename="a.png")
    write_sample(tmp_path, "a", with_annotation=False)  # JPEGImages/a.jpg: same id "a"
    result = check(tmp_path)
    assert [r["image"] for r in result.rows] == ["JPEGImages/a.png"]  # the annotated one keeps the id
    conflict = issues(result, "id_conflict")
    assert [(i["path"], i["severity"]) for i in conflict] == [("JPEGImages/a.jpg", "error")]


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("image_dir", "ann_dir", "stem", "expected"),
    [
        ("JPEGImages", "Annotations", "000001", ("000001", "JPEGImages/000001.jpg", "Annotations/000001.xml")),
        ("images", "annotations", "a", ("a", "images/a.jpg", "annotations/a.xml")),
        ("", "", "sub/deep/a", ("sub/deep/a", "sub/deep/a.jpg", "sub/deep/a.xml")),
    ],
    ids=["standard", "lower-case", "flat-nested"],
)
def test_three_layouts(tmp_path, image_dir, ann_dir, stem, expected):
    write_sample(tmp_path, stem, image_dir=image_dir, ann_dir=ann_dir)
    result = check(tmp_path)
    assert not issues(result)
    assert [(r["id"], r["image"], r["annotation"]) for r in result.rows] == [expected]


def test_matching_by_filename_when_stems_differ(tmp_path):
    write_sample(tmp_path, "ann_7", with_image=False, filename="photo_7.jpg")
    write_sample(tmp_path, "photo_7", with_annotation=False)
    result = check(tmp_path)
    assert not issues(result)
    assert [(r["id"], r["annotation"]) for r in result.rows] == [("photo_7", "Annotations/ann_7.xml")]


# ---------------------------------------------------------------- report, outputs, robustness


def _mixed_dataset(raw: Path) -> None:
    write_sample(raw, "01_good")
    write_sample(raw, "02_unknown", objects=[Obj("zebra")])
    write_sample(raw, "03_clipped", objects=[Obj("circle", (-1, 0, 30, 30)), Obj("square", (0, 0, 66, 48))])
    write_sample(raw, "04_truncated", image=truncated_jpeg())
    write_sample(raw, "05_background", with_annotation=False)
    write_sample(raw, "06_unsafe", xml=BILLION_LAUGHS)
    write_sample(raw, "07_good", fmt="png", image_ext=".jpg", objects=[Obj("triangle")])


def test_report_counts_and_issue_order(tmp_path):
    _mixed_dataset(tmp_path)
    report = check(tmp_path).report
    assert list(report) == ["samples", "accepted", "rejected", "warnings", "by_code", "issues"]
    assert (report["samples"], report["accepted"], report["rejected"], report["warnings"]) == (7, 4, 3, 3)
    assert report["by_code"] == {
        "annotation_missing": 1,
        "bbox_clipped": 2,
        "class_unknown": 1,
        "image_truncated": 1,
        "xml_unsafe": 1,
    }
    keys = [(i["path"], i["code"]) for i in report["issues"]]
    assert keys == sorted(keys)
    assert all(set(i) == {"path", "code", "severity", "message"} for i in report["issues"])


def test_fail_with_rejects_writes_the_report_and_removes_a_stale_manifest(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _mixed_dataset(raw)
    out.mkdir()
    (out / "manifest.jsonl").write_text("stale\n")
    write_validation(validate_dataset(raw, DATA), out, on_error="fail")
    assert json.loads((out / "report.json").read_text())["rejected"] == 3
    assert not (out / "manifest.jsonl").exists()


def test_skip_writes_the_manifest_without_rejected_samples(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _mixed_dataset(raw)
    write_validation(validate_dataset(raw, DATA), out, on_error="skip")
    lines = (out / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["id"] for r in rows] == ["01_good", "03_clipped", "05_background", "07_good"]
    assert lines == [json.dumps(r, sort_keys=True) for r in rows]  # the documented serialisation
    assert sorted(out.iterdir()) == [out / "manifest.jsonl", out / "report.json"]  # no temporary files left


def test_fail_without_rejects_writes_the_manifest(tmp_path):
    write_sample(tmp_path / "raw", "a")
    write_validation(validate_dataset(tmp_path / "raw", DATA), tmp_path / "out", on_error="fail")
    assert len((tmp_path / "out/manifest.jsonl").read_text().splitlines()) == 1


def test_outputs_are_byte_identical_on_rerun(tmp_path):
    raw = tmp_path / "raw"
    _mixed_dataset(raw)
    write_image_sets(raw, {"train": ["01_good"], "val": ["07_good"]})
    for out in ("out1", "out2"):
        write_validation(validate_dataset(raw, DATA), tmp_path / out, on_error="skip")
    for name in ("report.json", "manifest.jsonl"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert str(tmp_path) not in (tmp_path / "out1/report.json").read_text()  # no absolute paths


def test_missing_raw_dir_is_a_vis_error(tmp_path):
    with pytest.raises(VisError, match="not a folder"):
        check(tmp_path / "nope")


def test_oddities_on_disk_do_not_crash(tmp_path):
    write_sample(tmp_path, "a")
    (tmp_path / "JPEGImages" / "dir.jpg").mkdir()  # a folder named like an image
    (tmp_path / "Annotations" / "dir.xml").mkdir()
    (tmp_path / "JPEGImages" / "link.jpg").symlink_to(tmp_path / "nowhere.jpg")  # a dangling link
    (tmp_path / "Annotations" / "weird name ü.xml").write_bytes(annotation_xml("weird name ü.jpg"))
    result = check(tmp_path)
    assert row(result, "JPEGImages/a.jpg") is not None
    assert result.report["samples"] == result.report["accepted"] + result.report["rejected"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xml_cut=st.integers(min_value=0, max_value=400),
    xml_noise=st.binary(max_size=40),
    fmt=st.sampled_from(["jpeg", "png", "bmp", "webp"]),
    orientation=st.one_of(st.none(), st.integers(0, 65535)),
    image_cut=st.integers(min_value=0, max_value=900),
    image_noise=st.binary(max_size=40),
    box=st.tuples(*[st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none())] * 4),
    size=st.tuples(*[st.one_of(st.integers(-5, 100), st.text(max_size=3), st.none())] * 2),
    present=st.sampled_from([(True, True), (True, False), (False, True)]),
    data=st.builds(
        data_config,
        classes=st.sampled_from([[], ["circle"]]),
        allow_background=st.booleans(),
        bbox_tolerance_px=st.floats(-5, 5),
    ),
)
def test_no_input_makes_validation_raise(
    xml_cut, xml_noise, fmt, orientation, image_cut, image_noise, box, size, present, data
):
    """Mangled XML, mangled images, absurd values and settings give issues, never an exception."""
    xml = annotation_xml("a.jpg", size, [Obj("circle", box)])
    xml = xml[:xml_cut] + xml_noise + xml[xml_cut:]
    image = image_bytes(fmt, exif_orientation=orientation)
    image = image[:image_cut] + image_noise
    with tempfile.TemporaryDirectory() as tmp:
        write_sample(Path(tmp), "a", image=image, xml=xml, with_image=present[0], with_annotation=present[1])
        result = validate_dataset(Path(tmp), data)
    assert result.report["samples"] == 1
    assert (result.rows == []) == (result.report["rejected"] == 1)
    errors = [i for i in issues(result) if i["severity"] == "error"]
    assert bool(errors) == (result.report["rejected"] == 1)
    assert set(result.report["by_code"]) <= set(CODES)


# ---------------------------------------------------------------- summary


def test_summary_names_counts_codes_and_first_problems(tmp_path):
    _mixed_dataset(tmp_path)
    for n in range(12):
        write_sample(tmp_path, f"zz_bad_{n:02}", image=b"")
    summary = format_summary(check(tmp_path).report)
    lines = summary.splitlines()
    assert lines[0] == "validated 19 samples: 4 accepted, 15 rejected, 3 warnings"
    assert "image_unreadable 12" in summary and "bbox_clipped 2" in summary
    assert "Annotations/06_unsafe.xml" in summary and "JPEGImages/04_truncated.jpg" in summary
    problems = [line for line in lines if line.startswith(("  error   ", "  warning "))]
    assert len(problems) == 10  # the first few, not all 20
    assert len(lines) <= 15


def test_summary_of_a_clean_dataset_is_one_line(tmp_path):
    write_sample(tmp_path, "a")
    summary = format_summary(check(tmp_path, classes=["circle"]).report)
    assert summary == "validated 1 sample: 1 accepted, 0 rejected, 0 warnings"


# ---------------------------------------------------------------- streaming and imports


def test_image_bytes_are_not_held_beyond_one_sample(tmp_path):
    """30 images of ~300 KB: the traced peak stays near one image, not near all of them."""
    for n in range(30):
        write_sample(tmp_path, f"{n:03}", fmt="bmp", image_size=(320, 320), size=(320, 320))
    total = sum(p.stat().st_size for p in (tmp_path / "JPEGImages").iterdir())
    check(tmp_path)  # warm-up: imports and caches are not what is measured
    tracemalloc.start()
    try:
        result = check(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.report["accepted"] == 30
    assert peak < total / 5, f"peak {peak} bytes for {total} bytes of images"


@pytest.mark.integration
def test_validation_imports_no_torch_ultralytics_or_mlflow(tmp_path):
    # cv2 is allowed: images.inspect_image cross-checks each image with OpenCV, Ultralytics' reader (test_fuzz).
    write_sample(tmp_path, "a")
    probe = (
        "import sys, dataclasses; from pathlib import Path; from visapp.composition import default_params;"
        "from visapp.dataset.validate import validate_dataset;"
        "data = dataclasses.replace(default_params().data, classes=['circle']);"
        f"validate_dataset(Path({str(tmp_path)!r}), data);"
        "print(sorted(m for m in ('torch', 'ultralytics', 'mlflow') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- the process pool


@pytest.mark.integration
def test_a_process_pool_gives_the_same_report_and_manifest_as_one_process(tmp_path, monkeypatch):
    """Samples of every kind, clean and broken, in numbers that start a pool: outputs byte-identical."""
    from visapp.dataset.sample_pool import worker_count

    raw = tmp_path / "raw"
    for n in range(150):
        kind = n % 6
        if kind == 0:
            write_sample(raw, f"{n:04d}", image=truncated_jpeg())
        elif kind == 1:
            write_sample(raw, f"{n:04d}", objects=[Obj("zebra")])
        elif kind == 2:
            write_sample(raw, f"{n:04d}", with_image=False)
        elif kind == 3:
            write_sample(raw, f"{n:04d}", seed=1)  # byte-identical images: duplicate_image
        else:
            write_sample(
                raw, f"{n:04d}", objects=[Obj("circle", (-1, 0, 20, 20))], exif_orientation=6 if kind == 5 else None
            )
    write_image_sets(raw, {"train": [f"{n:04d}" for n in range(0, 150, 2)], "val": ["0003", "0009"]})
    outputs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("VISAPP_WORKERS", workers)
        assert worker_count(150) == int(workers)
        result = validate_dataset(raw, DATA)
        write_validation(result, tmp_path / workers, on_error="skip")
        outputs[workers] = {p.name: p.read_bytes() for p in (tmp_path / workers).iterdir()}
    assert outputs["1"] == outputs["2"]
    assert json.loads(outputs["2"]["report.json"])["rejected"] > 0


@pytest.mark.integration
def test_the_built_in_sample_validates_identically_in_a_pool(tmp_path, monkeypatch):
    from visapp.dataset.synthetic import write_synthetic

    write_synthetic(tmp_path / "raw")
    outputs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("VISAPP_WORKERS", workers)
        write_validation(validate_dataset(tmp_path / "raw", DATA), tmp_path / workers, on_error="skip")
        outputs[workers] = {p.name: p.read_bytes() for p in (tmp_path / workers).iterdir()}
    assert outputs["1"] == outputs["2"]


# ---------------------------------------------------------------- reuse of earlier outcomes


def outputs(result) -> tuple[str, str]:
    return json.dumps(result.report, sort_keys=True), json.dumps([asdict(r) for r in result.rows], sort_keys=True)


def test_revalidation_reuses_unchanged_samples_and_reports_as_a_full_run(tmp_path, validation_work):
    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    for n in range(20):
        write_sample(raw, f"{n:03d}", image=truncated_jpeg() if n == 3 else None)
    validate_dataset(raw, DATA, reuse_dir=reuse)
    assert len(validation_work()["checked"]) == 20
    write_sample(raw, "new")  # a new sample
    write_sample(raw, "005", objects=[Obj("zebra")])  # a changed annotation
    write_image_sets(raw, {"train": ["007"]})  # a new list: 007's outcome depends on it
    again = validate_dataset(raw, DATA, reuse_dir=reuse)
    assert validation_work()["checked"] == ["JPEGImages/005.jpg", "JPEGImages/007.jpg", "JPEGImages/new.jpg"]
    assert outputs(again) == outputs(validate_dataset(raw, DATA))
    import sqlite3

    with sqlite3.connect(reuse / "outcomes.sqlite") as db:
        assert db.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 21  # this run's samples only


def test_the_store_knows_settled_files_by_their_stat_and_never_trusts_a_changed_one(tmp_path, validation_work):
    import hashlib
    import os
    import sqlite3
    import time

    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    _, xml = write_sample(raw, "a", objects=[Obj("circle", (10, 10, 20, 20))])
    write_sample(raw, "b")
    time.sleep(2.1)  # a file changed in the last 2 s may change again unseen: its digest is kept only once settled
    validate_dataset(raw, DATA, reuse_dir=reuse)
    with sqlite3.connect(reuse / "outcomes.sqlite") as db:
        kept = {os.fsdecode(path): sha for path, sha in db.execute("SELECT path, sha256 FROM files")}
    assert kept == {
        path.relative_to(raw).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in raw.rglob("*")
        if path.is_file()
    }
    validation_work()
    assert outputs(validate_dataset(raw, DATA, reuse_dir=reuse)) == outputs(validate_dataset(raw, DATA))
    assert validation_work()["read"] == [
        "Annotations/a.xml",
        "Annotations/b.xml",
        "JPEGImages/a.jpg",
        "JPEGImages/b.jpg",
    ]
    validate_dataset(raw, DATA, reuse_dir=reuse)
    assert validation_work() == {"checked": [], "read": []}  # settled and unchanged: known by their stat, not even read
    # The same size and modification time, other bytes: the change time still tells, so a is checked again.
    before = xml.stat()
    xml.write_bytes(xml.read_bytes().replace(b"<xmax>20</xmax>", b"<xmax>90</xmax>"))
    os.utime(xml, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert xml.stat().st_size == before.st_size
    again = validate_dataset(raw, DATA, reuse_dir=reuse)
    assert validation_work() == {"checked": ["JPEGImages/a.jpg"], "read": ["Annotations/a.xml", "JPEGImages/a.jpg"]}
    assert issues(again)[0]["code"] == "bbox_out_of_bounds"


def test_files_with_new_stats_but_the_same_bytes_are_read_not_checked_again(tmp_path, validation_work):
    """A `dvc checkout` relinks every file: new inodes, the same bytes. Their outcomes are found by content."""
    import shutil

    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    for stem in ("a", "b", "c"):
        write_sample(raw, stem)
    first = validate_dataset(raw, DATA, reuse_dir=reuse)
    shutil.copytree(raw, tmp_path / "relinked")
    validation_work()
    again = validate_dataset(tmp_path / "relinked", DATA, reuse_dir=reuse)
    assert validation_work()["checked"] == []
    assert len(again.rows) == 3 and outputs(again) == outputs(first)


def test_changed_params_or_a_damaged_store_only_cost_time(tmp_path):
    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    write_sample(raw, "a", objects=[Obj("circle", (-1, 0, 20, 20))])
    validate_dataset(raw, DATA, reuse_dir=reuse)
    strict = replace(DATA, bbox_tolerance_px=0.0)
    assert issues(validate_dataset(raw, strict, reuse_dir=reuse))[0]["code"] == "bbox_out_of_bounds"
    (reuse / "outcomes.sqlite").write_bytes(b"not a database")
    assert outputs(validate_dataset(raw, DATA, reuse_dir=reuse)) == outputs(validate_dataset(raw, DATA))


def test_a_store_that_cannot_be_made_only_costs_time(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a")
    (tmp_path / "blocked").write_text("a file where the store's folder should be\n")
    result = validate_dataset(raw, DATA, reuse_dir=tmp_path / "blocked" / "reuse")
    assert outputs(result) == outputs(validate_dataset(raw, DATA))


def test_an_edit_to_the_validation_code_checks_every_sample_again(tmp_path, validation_work, monkeypatch):
    """The store's key holds the code that decides an outcome: no version number to forget to bump."""
    from visapp.dataset import reuse_store

    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    for stem in ("a", "b"):
        write_sample(raw, stem)
    validate_dataset(raw, DATA, reuse_dir=reuse)
    validate_dataset(raw, DATA, reuse_dir=reuse)
    assert validation_work()["checked"] == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]  # the first run only
    source = reuse_store._module_code
    edited = "visapp.formats.voc"
    monkeypatch.setattr(reuse_store, "_module_code", lambda name: source(name) + (b"\n# edited" * (name == edited)))
    reuse_store.code_digest.cache_clear()
    try:
        validate_dataset(raw, DATA, reuse_dir=reuse)
    finally:
        monkeypatch.undo()
        reuse_store.code_digest.cache_clear()
    assert validation_work()["checked"] == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]


def _runtime_imports(path: Path) -> set[str]:
    """The visapp modules a file imports to run (not those under `if TYPE_CHECKING:`), with their packages."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("visapp"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("visapp"))
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def test_the_store_key_covers_all_the_code_a_sample_check_runs():
    import importlib.util

    from visapp.dataset.reuse_store import OUTCOME_MODULES

    def source(name: str) -> Path | None:
        spec = importlib.util.find_spec(name) if name.startswith("visapp") else None
        return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None

    seen, todo = set(), {"visapp.dataset.sample_checks"}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            path = source(name)
        except ModuleNotFoundError:  # `from visapp.x import a_function`
            path = None
        if path is not None:
            seen.add(name)
            todo |= _runtime_imports(path)
    assert sorted(OUTCOME_MODULES) == sorted(seen)


def test_a_name_that_is_not_utf8_is_reported_and_survives_the_reuse_store(tmp_path, validation_work):
    """unzip leaves a Windows archive's names in their code page: `Se\\xf1al.jpg` is one byte, not UTF-8."""
    import os
    import time

    raw, reuse = tmp_path / "raw", tmp_path / "reuse"
    write_sample(raw, "ok")
    write_sample(raw, "x")
    for folder, suffix in (("JPEGImages", "jpg"), ("Annotations", "xml")):
        (raw / folder / f"x.{suffix}").rename(raw / folder / os.fsdecode(b"Se\xf1al." + suffix.encode()))
    time.sleep(2.1)  # settled: the store keeps their digests, under names that are not UTF-8
    first = validate_dataset(raw, DATA, reuse_dir=reuse)
    again = validate_dataset(raw, DATA, reuse_dir=reuse)
    assert validation_work()["checked"] == ["JPEGImages/Se\udcf1al.jpg", "JPEGImages/ok.jpg"]  # the first run only
    assert outputs(again) == outputs(first) == outputs(validate_dataset(raw, DATA))
    assert sorted(i["path"] for i in issues(first, "name_not_utf8")) == [
        "Annotations/Se\\xf1al.xml",
        "JPEGImages/Se\\xf1al.jpg",
    ]
