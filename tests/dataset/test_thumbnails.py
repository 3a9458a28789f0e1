"""Thumbnails of the samples a report names (`visapp.dataset.thumbnails`): drawn from the data stages' outputs, with
their labels, as the figure of flagged samples draws them; and a model's boxes drawn on an image."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from factory import Obj, image_bytes, write_sample
from visapp.composition import default_params
from visapp.config import PathsConfig
from visapp.dataset.pipeline import run_data_stages
from visapp.dataset.synthetic import CLASSES, write_synthetic
from visapp.dataset.thumbnails import INDEX_FILE, THUMBNAIL_PX, draw_boxes, draw_flagged

pytestmark = pytest.mark.unit


def checked(tmp_path: Path):
    """The sample's first 12 images, a sample with a box labelled twice and one with a zero-area box (rejected),
    checked with on_error=skip."""
    raw = tmp_path / "raw"
    write_synthetic(raw, images=12)
    write_sample(raw, "twice", objects=[Obj("square", (10, 10, 40, 40)), Obj("square", (10, 10, 40, 40))])
    write_sample(raw, "zero", objects=[Obj("square", (20, 10, 20, 30))])
    base = default_params()
    folders = {name: str(tmp_path / name) for name in ("checked", "validated", "yolo", "metadata", "model")}
    paths = PathsConfig(raw=str(raw), **folders)
    data = dataclasses.replace(base.data, classes=list(CLASSES), on_error="skip")
    params = dataclasses.replace(base, paths=paths, data=data)
    result = run_data_stages(params)
    assert result.stopped is None
    return params, result.report


def test_each_accepted_sample_an_issue_names_gets_a_thumbnail_with_its_labels(tmp_path):
    params, report = checked(tmp_path)
    index = draw_flagged(params, tmp_path / "thumbs")
    assert json.loads((tmp_path / "thumbs" / INDEX_FILE).read_text()) == index
    by_image = {sample["image"]: sample for sample in index["samples"]}
    assert by_image["JPEGImages/twice.jpg"]["codes"] == ["box_duplicate"]
    assert by_image["JPEGImages/twice.jpg"]["annotation"] == "Annotations/twice.xml"
    assert "JPEGImages/zero.jpg" not in by_image  # rejected: no labels to draw (the report lists it)
    named = {issue["path"] for issue in report["issues"] if issue["path"] != "."}
    assert all(sample["image"] in named or sample["annotation"] in named for sample in index["samples"])
    for sample in index["samples"]:
        image = Image.open(tmp_path / "thumbs" / sample["file"])
        assert max(image.size) == THUMBNAIL_PX
    # The box drawn in the class's colour: the square's boxes (class 1) are orange in the figures' palette.
    twice = Image.open(tmp_path / "thumbs" / by_image["JPEGImages/twice.jpg"]["file"]).convert("RGB")
    assert (255, 127, 14) in {colour for _, colour in twice.getcolors(maxcolors=1 << 20)}


def test_the_limit_leaves_the_rest_counted(tmp_path):
    params, _ = checked(tmp_path)
    index = draw_flagged(params, tmp_path / "thumbs", limit=1)
    assert len(index["samples"]) == 1 and index["left_out"] >= 1
    assert sorted(path.name for path in (tmp_path / "thumbs").iterdir()) == ["0000.png", INDEX_FILE]


def test_a_models_boxes_are_drawn_on_the_image(tmp_path):
    path = tmp_path / "street.png"
    path.write_bytes(image_bytes("png", (200, 100), seed=3))
    png = draw_boxes(path, [{"class_id": 2, "xyxy": [10.0, 10.0, 90.0, 60.0]}], list(CLASSES))
    drawn = Image.open(io.BytesIO(png))
    assert drawn.size == (THUMBNAIL_PX, THUMBNAIL_PX // 2)
    assert (44, 160, 44) in {colour for _, colour in drawn.convert("RGB").getcolors(maxcolors=1 << 20)}  # triangle
