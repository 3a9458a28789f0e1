"""Model quality without a training: cleanlab's verdicts through our one module (and its numpy shim), the gate's
refusals, the audit's table, and which split an evaluation takes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from factory import params as default_params
from visapp.config import ReleaseConfig
from visapp.errors import VisError
from visapp.formats.yolo import DataYaml, data_yaml_text
from visapp.integrations import cleanlab
from visapp.registry.gate import Compared, format_compared, refusals
from visapp.training.audit_table import format_audit
from visapp.training.evaluate import Evaluation, held_out_split
from visapp.training.folds import assign_folds

pytestmark = pytest.mark.unit

GOOD = cleanlab.ImageBoxes([(0, (10, 10, 50, 50))], [(0, 0.95, (11, 10, 50, 51))])
MISSING = cleanlab.ImageBoxes([(0, (10, 10, 50, 50))], [(0, 0.95, (10, 10, 50, 50)), (1, 0.97, (100, 100, 150, 150))])
SWAPPED = cleanlab.ImageBoxes([(1, (10, 10, 50, 50))], [(0, 0.96, (10, 10, 50, 50))])


def test_cleanlab_names_the_kind_and_the_box_of_each_planted_error():
    good, missing, swapped = cleanlab.label_issues([GOOD, MISSING, SWAPPED] * 4, classes=2, high_confidence=0.95)[:3]
    assert good.score > 0.9 > max(missing.score, swapped.score)
    assert (missing.kind, missing.prediction_index, missing.label_index) == ("missing_box", 1, None)
    assert (swapped.kind, swapped.label_index, swapped.prediction_index) == ("wrong_class", 0, None)


def test_at_cleanlab_s_own_threshold_the_score_is_cleanlab_s_get_label_quality_scores():
    from cleanlab.object_detection import rank

    images = [GOOD, MISSING, SWAPPED, SURE_BUT_NOT_CERTAIN] * 3
    ours = [verdict.score for verdict in cleanlab.label_issues(images, classes=2, high_confidence=0.95)]
    with cleanlab._numpy_compat():
        theirs = rank.get_label_quality_scores(*cleanlab._inputs(images, 2), verbose=False)
    assert ours == pytest.approx(list(theirs), rel=1e-9)


# A model sure at 0.85 (as ours are) of an object the labeller missed and of another class on a label.
SURE_BUT_NOT_CERTAIN = cleanlab.ImageBoxes(
    [(1, (10, 10, 50, 50))], [(0, 0.85, (10, 10, 50, 50)), (1, 0.86, (100, 100, 150, 150))]
)


def test_a_model_sure_below_0_95_has_its_missed_box_and_swap_seen_from_high_confidence():
    images = [GOOD, SURE_BUT_NOT_CERTAIN] * 4
    good, lax = cleanlab.label_issues(images, classes=2, high_confidence=0.8)[:2]
    _, strict = cleanlab.label_issues(images, classes=2, high_confidence=0.95)[:2]
    assert strict.score > 0.9  # at cleanlab's 0.95 the model is sure of nothing here: the labels look right
    assert lax.score < 0.5 < good.score
    assert lax.kind in {"wrong_class", "missing_box"}


def test_cleanlab_runs_on_a_numpy_without_in1d_and_leaves_numpy_as_it_was(monkeypatch):
    """cleanlab 2.9 calls numpy.in1d, which numpy 2.4 removed: the module lends numpy.isin for its calls only."""
    if hasattr(np, "in1d"):
        monkeypatch.delattr(np, "in1d")
    verdicts = cleanlab.label_issues([GOOD, MISSING, SWAPPED] * 4, classes=2, high_confidence=0.95)
    scores = [verdict.score for verdict in verdicts]
    assert len(scores) == 12 and not hasattr(np, "in1d")
    monkeypatch.setattr(cleanlab, "_numpy_compat", contextlib.nullcontext)  # without the shim, cleanlab fails
    with pytest.raises(AttributeError, match="in1d"):
        cleanlab.label_issues([GOOD, MISSING, SWAPPED] * 4, classes=2, high_confidence=0.95)


def evaluation(overall: float, per_class: dict[str, float]) -> Evaluation:
    classes = {name: {"mAP50-95": ap, "mAP50": ap, "objects": 5} for name, ap in per_class.items()}
    return Evaluation("test", 10, 15, {"mAP50-95": overall, "mAP50": overall}, classes, 5.0, "cpu")


def test_the_gate_refuses_a_drop_past_its_limits_and_names_the_class():
    limits = ReleaseConfig(max_drop=0.02, max_class_drop=0.05)
    prod = evaluation(0.60, {"circle": 0.7, "square": 0.6, "triangle": 0.5})
    close = Compared("prod", "new", prod, evaluation(0.59, {"circle": 0.69, "square": 0.58, "triangle": 0.5}))
    assert refusals(close, limits) == []
    lost = Compared("prod", "new", prod, evaluation(0.45, {"circle": 0.7, "square": 0.6, "triangle": 0.05}))
    found = refusals(lost, limits)
    assert len(found) == 2 and "mAP50-95 0.4500 against 0.6000" in found[0]
    assert found[1].startswith("class 'triangle': AP50-95 0.0500 against 0.5000 (-0.4500")
    table = format_compared(lost)
    assert "triangle" in table and "-0.4500" in table and table.splitlines()[-1].startswith("all")


def test_the_audit_table_lists_the_likeliest_errors_with_the_files_to_open():
    finding = {"image": "JPEGImages/7.jpg", "annotation": "Annotations/7.xml", "score": 0.0123, "issue": True,
               "kind": "wrong_class", "box": {"class": "square", "xyxy": [1, 2, 30, 40]}}  # fmt: skip
    other = {**finding, "image": "JPEGImages/8.jpg", "annotation": None, "score": 0.5, "issue": False,
             "kind": "missing_box", "box": {"class": "circle", "confidence": 0.91, "xyxy": [5, 5, 9, 9]}}  # fmt: skip
    audit = {"splits": ["val", "test"], "images": 40, "flagged": 1, "findings": [finding, other]}
    lines = format_audit(audit, Path("data/raw"), top=5).splitlines()
    assert "40 held-out images (val, test): 1 flagged" in lines[0]
    assert "wrong class" in lines[3] and "square [1,2,30,40]" in lines[3]
    assert "data/raw/JPEGImages/7.jpg  data/raw/Annotations/7.xml" in lines[3]
    assert "a box is missing" in lines[4] and "circle 0.91" in lines[4]
    folds = {**audit, "splits": ["val", "test", "train"]}  # audit.folds: the train split predicted out of fold
    assert "(val, test, train out of fold)" in format_audit(folds, Path("data/raw"), top=5).splitlines()[0]


def test_an_evaluation_takes_the_test_split_and_says_so_when_there_is_none(tmp_path):
    lists = {"train": "train.txt", "val": "val.txt"}
    (tmp_path / "data.yaml").write_text(data_yaml_text(DataYaml(["a"], lists, ".")))
    split, note = held_out_split(tmp_path)
    assert split == "val" and "no test split" in note and "data.split.test" in note
    (tmp_path / "data.yaml").write_text(data_yaml_text(DataYaml(["a"], {**lists, "test": "test.txt"}, ".")))
    assert held_out_split(tmp_path) == ("test", None)
    assert default_params().data.split.test > 0  # the demo keeps a held-out test share


def test_folds_cut_the_train_split_into_seeded_parts_each_image_in_one():
    images = [f"JPEGImages/{n:04d}.jpg" for n in range(11)]
    folds = assign_folds(images, 3, seed=0)
    assert sorted(image for fold in folds for image in fold) == images
    assert sorted(len(fold) for fold in folds) == [3, 4, 4]
    assert assign_folds(list(reversed(images)), 3, seed=0) == folds  # the order given does not matter
    assert assign_folds(images, 3, seed=1) != folds
    with pytest.raises(VisError, match=r"audit\.folds is 1: give 0"):
        assign_folds(images, 1, seed=0)
    with pytest.raises(VisError, match=r"the train split has 11 images: lower audit\.folds"):
        assign_folds(images, 12, seed=0)
