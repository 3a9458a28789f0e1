"""visapp.dataset.diff: two versions' samples -> exactly the changes planted between them, and the gate."""

from __future__ import annotations

import hashlib
import math

import pytest

from factory import Obj, image_bytes, write_sample
from visapp.dataset.diff import (
    Box,
    BoxChange,
    ClassCount,
    DiffSample,
    SampleChange,
    diff_samples,
    gate,
    headline,
    iou,
    jensen_shannon,
    ks_statistic,
    match_boxes,
    read_samples,
    total_variation,
)
from visapp.dataset.diff_report import format_diff

pytestmark = pytest.mark.unit

CIRCLE = Box("circle", 10, 10, 40, 30)  # 30 x 20, centre (25, 20)
SQUARE = Box("square", 44, 30, 60, 46)  # far from CIRCLE


def sample(ident: str, *boxes: Box, image: str | None = None) -> DiffSample:
    return DiffSample(ident, f"JPEGImages/{ident}.jpg", image or f"hash-{ident}", tuple(boxes))


def test_the_same_samples_give_an_empty_diff():
    samples = [sample("a", CIRCLE), sample("b", CIRCLE, SQUARE), sample("c")]
    diff = diff_samples(samples, list(samples))
    assert diff.is_empty()
    assert diff.unchanged == 3 and diff.relabelled == []
    assert diff.class_total_variation == 0 and diff.class_jensen_shannon == 0
    assert all(drift.ks == 0 for drift in diff.box_sizes)
    numbers = headline(diff)
    assert {key: value for key, value in numbers.items() if value} == {
        "samples_before": 3,
        "samples_after": 3,
        "unchanged": 3,
        "boxes_before": 3,
        "boxes_after": 3,
    }


def test_added_removed_renamed_and_replaced_samples():
    before = [sample("kept", CIRCLE), sample("gone", CIRCLE), sample("old", CIRCLE), sample("swapped", CIRCLE)]
    after = [
        sample("kept", CIRCLE),
        sample("new", CIRCLE, image="hash-old"),  # the same image bytes under another id
        sample("swapped", CIRCLE, image="other bytes"),  # the same id, another image
        sample("fresh", SQUARE),
    ]
    diff = diff_samples(before, after)
    assert diff.added == ["fresh"]
    assert diff.removed == ["gone"]
    assert diff.renamed == [("old", "new")]
    assert diff.replaced == ["swapped"]
    assert diff.unchanged == 1
    assert diff.relabelled == []
    assert diff.class_counts == [ClassCount("circle", 4, 3, -1), ClassCount("square", 0, 1, 1)]


def test_a_renamed_image_is_not_taken_for_a_replaced_one():
    """a.jpg renamed to b.jpg, and a new image saved as a.jpg: a rename and an addition, not a replacement."""
    diff = diff_samples([sample("a", CIRCLE)], [sample("b", CIRCLE, image="hash-a"), sample("a", CIRCLE, image="new")])
    assert diff.renamed == [("a", "b")] and diff.added == ["a"] and diff.removed == [] and diff.replaced == []


def test_each_kind_of_relabel_is_reported_exactly():
    moved = Box("circle", 14, 10, 44, 30)  # shifted 4 px right, same size
    grown = Box("circle", 8, 8, 42, 32)  # 34 x 24 around the same centre
    before = [
        sample("moved", CIRCLE),
        sample("resized", CIRCLE),
        sample("reclassed", CIRCLE),
        sample("box_added", CIRCLE),
        sample("box_removed", CIRCLE, SQUARE),
        sample("renamed_and_moved", CIRCLE),
    ]
    after = [
        sample("moved", moved),
        sample("resized", grown),
        sample("reclassed", Box("square", 10, 10, 40, 30)),
        sample("box_added", CIRCLE, SQUARE),
        sample("box_removed", CIRCLE),
        sample("renamed_to", moved, image="hash-renamed_and_moved"),
    ]
    diff = diff_samples(before, after)
    moved_iou = round(26 * 20 / (2 * 600 - 26 * 20), 6)
    grown_iou = round(600 / (34 * 24), 6)
    assert diff.relabelled == [
        SampleChange("box_added", "box_added", (), (SQUARE,), ()),
        SampleChange("box_removed", "box_removed", (), (), (SQUARE,)),
        SampleChange("moved", "moved", (BoxChange(CIRCLE, moved, moved_iou, 4.0, True, False, False),), (), ()),
        SampleChange(
            "reclassed",
            "reclassed",
            (BoxChange(CIRCLE, Box("square", 10, 10, 40, 30), 1.0, 0.0, False, False, True),),
            (),
            (),
        ),
        SampleChange(
            "renamed_and_moved",
            "renamed_to",
            (BoxChange(CIRCLE, moved, moved_iou, 4.0, True, False, False),),
            (),
            (),
        ),
        SampleChange("resized", "resized", (BoxChange(CIRCLE, grown, grown_iou, 0.0, False, True, False),), (), ()),
    ]
    assert diff.renamed == [("renamed_and_moved", "renamed_to")]
    assert diff.unchanged == 0 and diff.added == [] and diff.removed == []
    numbers = headline(diff)
    assert (numbers["boxes_moved"], numbers["boxes_resized"], numbers["boxes_class_changed"]) == (2, 1, 1)
    assert (numbers["boxes_added"], numbers["boxes_removed"]) == (1, 1)
    assert numbers["relabelled"] == 6 and numbers["relabelled_fraction"] == 1.0
    text = format_diff(diff)
    assert "moved 4 px" in text and "resized 30x20 -> 34x24" in text and "class circle -> square" in text
    assert "box added square (44,30,60,46)" in text and "box removed square (44,30,60,46)" in text


def test_boxes_overlapping_less_than_half_are_a_removal_and_an_addition():
    far = Box("circle", 30, 10, 60, 30)  # IoU 10*20 / (2*600 - 200) = 0.2
    diff = diff_samples([sample("a", CIRCLE)], [sample("a", far)])
    assert diff.relabelled == [SampleChange("a", "a", (), (far,), (CIRCLE,))]


def test_matching_is_greedy_by_iou_and_prefers_the_same_class_on_a_tie():
    a = Box("circle", 0, 0, 10, 10)
    near = Box("circle", 1, 0, 11, 10)  # IoU 90/110
    nearer = Box("circle", 0, 0, 10, 10.5)  # IoU 100/105
    assert match_boxes([a], [near, nearer]) == [(0, 1, pytest.approx(100 / 105))]
    assert match_boxes([a], [Box("square", 0, 0, 10, 10), a]) == [(0, 1, 1.0)]
    # Two old boxes, two new ones: each old box keeps its best partner that is still free.
    b = Box("circle", 20, 0, 30, 10)
    assert [(i, j) for i, j, _ in match_boxes([a, b], [b, a])] == [(0, 1), (1, 0)]


def test_iou_of_disjoint_touching_and_equal_boxes():
    assert iou(CIRCLE, SQUARE) == 0
    assert iou(CIRCLE, Box("circle", 40, 10, 70, 30)) == 0  # sharing an edge only
    assert iou(CIRCLE, CIRCLE) == 1


def test_class_drift_statistics():
    assert total_variation({"a": 5}, {"a": 7}) == 0
    assert total_variation({"a": 1}, {"b": 1}) == 1
    assert total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1)
    assert jensen_shannon({"a": 1, "b": 1}, {"a": 2, "b": 2}) == 0
    # JS divergence of (3/4, 1/4) and (1/2, 1/2), base 2, by hand
    m = (5 / 8, 3 / 8)
    kl_p = 0.75 * math.log2(0.75 / m[0]) + 0.25 * math.log2(0.25 / m[1])
    kl_q = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    assert jensen_shannon({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert total_variation({}, {}) == 0 and total_variation({}, {"a": 1}) == 1


def test_ks_statistic_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    first = [1.0, 2.0, 2.0, 3.5, 8.0, 9.0]
    second = [2.0, 2.5, 3.0, 7.0, 20.0]
    assert ks_statistic(first, second) == pytest.approx(scipy_stats.ks_2samp(first, second).statistic)
    assert ks_statistic(first, first) == 0
    assert ks_statistic([1, 2], [3, 4]) == 1
    assert ks_statistic([], []) == 0 and ks_statistic([], [1.0]) == 1


def test_box_size_drift_compares_width_height_and_size():
    small = [sample(f"s{i}", Box("circle", 0, 0, 10, 10)) for i in range(4)]
    wide = [sample(f"w{i}", Box("circle", 0, 0, 40, 10)) for i in range(4)]
    diff = diff_samples(small, wide)
    assert {drift.measure: drift.ks for drift in diff.box_sizes} == {"width": 1.0, "height": 0.0, "size": 1.0}
    assert diff.box_sizes[0].before == (10, 10, 10) and diff.box_sizes[0].after == (40, 40, 40)
    assert diff.box_sizes[2].after == (20, 20, 20)  # the square root of the area


def test_the_gate_names_each_limit_exceeded_and_passes_at_the_limit():
    numbers = {"removed_fraction": 0.25, "relabelled_fraction": 0.1, "class_total_variation": 0.0, "box_size_ks": 0.5}
    limits = {
        "max_removed_fraction": 0.1,
        "max_relabelled_fraction": 0.1,
        "max_class_drift": 0.0,
        "max_box_size_drift": 0.4,
    }
    assert gate(numbers, limits) == [
        "removed_fraction 0.25 > max_removed_fraction 0.1",
        "box_size_ks 0.5 > max_box_size_drift 0.4",
    ]
    assert gate(numbers, {**limits, "max_removed_fraction": 0.25, "max_box_size_drift": 1.0}) == []


def test_fractions_are_of_the_old_version_and_of_the_samples_in_both():
    before = [sample(str(i), CIRCLE) for i in range(10)]
    after = [sample(str(i), Box("square", 10, 10, 40, 30) if i < 3 else CIRCLE) for i in range(8)]
    numbers = headline(diff_samples(before, after))
    assert numbers["removed_fraction"] == 0.2  # 2 of 10
    assert numbers["relabelled_fraction"] == 0.375  # 3 of the 8 in both
    assert headline(diff_samples([], []))["removed_fraction"] == 0.0


def test_read_samples_pairs_a_voc_folder_as_validation_does(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a", objects=[Obj("circle", (10, 10, 40, 30)), Obj("square", (1, 2, 3, 4))])
    write_sample(raw, "sub/b", fmt="png", objects=[])  # in a sub-folder, no objects
    write_sample(raw, "bg", with_annotation=False)  # a background image
    write_sample(raw, "lonely", with_image=False)  # an annotation without an image
    write_sample(raw, "bad", objects=[Obj("circle", ("x", 1, 2, 3)), Obj("circle", (5, 5, 5, 9))])
    found = read_samples(raw)
    by_id = {s.id: s for s in found.samples}
    assert sorted(by_id) == ["a", "bad", "bg", "sub/b"]
    assert by_id["a"].boxes == (Box("circle", 10, 10, 40, 30), Box("square", 1, 2, 3, 4))
    assert by_id["bg"].boxes == () and by_id["sub/b"].boxes == () and by_id["bad"].boxes == ()
    assert by_id["a"].image_hash == hashlib.md5((raw / "JPEGImages/a.jpg").read_bytes()).hexdigest()
    assert sorted(path for path, _ in found.skipped) == [
        "Annotations/bad.xml",
        "Annotations/bad.xml",
        "Annotations/lonely.xml",
    ]


def test_read_samples_takes_image_hashes_from_the_caller(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a", image=image_bytes(seed=1))
    (raw / "JPEGImages" / "a.jpg").write_bytes(b"")  # a stand-in: the hash comes from elsewhere
    assert read_samples(raw, lambda rel: f"recorded {rel}").samples[0].image_hash == "recorded JPEGImages/a.jpg"


def test_the_diff_leaves_out_exactly_the_boxes_validation_calls_invalid(tmp_path):
    """One rule for a usable box: what the diff skips, and why, is what validation rejects as bbox_invalid."""
    from factory import data_config
    from visapp.dataset.validate import validate_dataset

    raw = tmp_path / "raw"
    boxes = [("x", 1, 2, 3), (5, 5, 5, 9), (1, 1, 9, 9), (9, 1, 2, 3)]
    write_sample(raw, "a", objects=[Obj("circle", box) for box in boxes])
    report = validate_dataset(raw, data_config(classes=["circle"])).report
    invalid = [(i["path"], i["message"]) for i in report["issues"] if i["code"] == "bbox_invalid"]
    assert len(invalid) == 3
    assert sorted(read_samples(raw).skipped) == sorted(invalid)
