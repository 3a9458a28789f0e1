"""What real exports do to validation: odd file names, tag case, pairing, ImageSets quirks, nothing to train on.

Each test plants one class of problem and checks the outcome a person expects: the sample handled, or an issue
with its code that names the files involved; never a silent background, never a traceback.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from factory import Obj, annotation_xml, data_config, write_image_sets, write_sample
from visapp.dataset.convert import convert
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.report import ERROR

pytestmark = pytest.mark.unit

DATA = data_config(classes=["circle"], on_error="skip")
LATIN1_NAME = os.fsdecode(b"Se\xf1al")  # as unzip leaves a Windows archive's name: latin-1 bytes


def validate(raw: Path, **changes):
    return validate_dataset(raw, replace(DATA, **changes) if changes else DATA)


def codes(result, *, path: str | None = None) -> list[tuple[str, str]]:
    """(path, code) of every issue but class_absent (about the class list, not the files)."""
    issues = result.report["issues"]
    return sorted((i["path"], i["code"]) for i in issues if i["code"] != "class_absent" and path in (None, i["path"]))


def messages(result, code: str) -> list[str]:
    return [i["message"] for i in result.report["issues"] if i["code"] == code]


# ---------------------------------------------------------------- file names that are not UTF-8


def test_a_non_utf8_name_is_reported_with_the_fix_and_the_rest_goes_through(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, LATIN1_NAME, filename="Señal.jpg")
    write_sample(raw, "ok")
    result = validate(raw)
    assert codes(result) == [
        ("Annotations/Se\\xf1al.xml", "name_not_utf8"),
        ("JPEGImages/Se\\xf1al.jpg", "name_not_utf8"),
    ]
    assert "'Señal.jpg'" in messages(result, "name_not_utf8")[1] and "convmv" in messages(result, "name_not_utf8")[1]
    assert [row.image for row in result.rows] == ["JPEGImages/ok.jpg"]
    json.dumps(result.report, ensure_ascii=False).encode("utf-8")  # a valid UTF-8 JSON document
    write_validation(result, tmp_path / "validated", on_error="skip")
    convert(tmp_path / "validated" / "manifest.jsonl", raw, tmp_path / "yolo", DATA, 0)
    assert (tmp_path / "yolo" / "labels").exists()


def test_a_non_utf8_image_name_beside_a_utf8_annotation_is_reported_not_a_background(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, LATIN1_NAME, with_annotation=False)
    write_sample(raw, "Señal", with_image=False)
    result = validate(raw)
    assert ("JPEGImages/Se\\xf1al.jpg", "name_not_utf8") in codes(result)
    assert result.rows == []


# ---------------------------------------------------------------- tag case


@pytest.mark.parametrize("tag", ["Object", "OBJECT"])
def test_objects_in_any_tag_case_are_trained_not_dropped(tmp_path, tag):
    raw = tmp_path / "raw"
    xml = annotation_xml("a.jpg", objects=[Obj("circle")], root="Annotation").replace(b"object>", f"{tag}>".encode())
    write_sample(raw, "a", xml=xml)
    [row] = validate(raw).rows
    assert [obj.name for obj in row.objects] == ["circle"]


# ---------------------------------------------------------------- pairing


def test_a_look_alike_image_is_never_a_silent_background(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "pictures/IMG_0001 (1)", image_dir="", with_annotation=False)
    write_sample(raw, "notes/IMG_0001", ann_dir="", with_image=False)
    result = validate(raw, allow_background=True)
    issues = {i["code"]: i for i in result.report["issues"]}
    assert issues["annotation_missing"]["severity"] == ERROR
    assert "notes/IMG_0001.xml" in issues["annotation_missing"]["message"]
    assert "pictures/IMG_0001 (1).jpg" in issues["image_missing"]["message"]
    assert "add the image" not in issues["image_missing"]["message"]
    assert result.rows == []


def test_two_annotations_for_one_image_reject_it_naming_both(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a", objects=[Obj("circle")])
    write_sample(raw, "a_old", with_image=False, filename="a.jpg", objects=[Obj("circle", (2, 2, 9, 9))])
    write_sample(raw, "b")
    result = validate(raw)
    assert codes(result) == [
        ("Annotations/a_old.xml", "annotation_conflict"),
        ("JPEGImages/a.jpg", "annotation_conflict"),
    ]
    assert "Annotations/a.xml, Annotations/a_old.xml" in messages(result, "annotation_conflict")[1]
    assert [row.image for row in result.rows] == ["JPEGImages/b.jpg"]


def test_a_windows_path_and_an_nfd_name_pair_and_train(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "IMG_0001", with_annotation=False)
    write_sample(raw, "label_1", with_image=False, filename="D:\\export\\IMG_0001.jpg")
    write_sample(raw, unicodedata.normalize("NFC", "café"), with_annotation=False)
    write_sample(raw, unicodedata.normalize("NFD", "café"), with_image=False)
    result = validate(raw)
    assert codes(result) == []
    assert len(result.rows) == 2


# ---------------------------------------------------------------- ImageSets


def test_ids_listed_with_no_sample_are_each_a_warning(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a")
    write_sample(raw, "b")
    write_image_sets(raw, {"train": ["a", "ghost", "b.jpg"], "val": ["phantom"]})
    result = validate(raw)
    assert codes(result) == [
        ("ImageSets/Main/train.txt", "imageset_unknown"),
        ("ImageSets/Main/val.txt", "imageset_unknown"),
    ]
    assert "'ghost'" in messages(result, "imageset_unknown")[0]
    assert {row.split for row in result.rows} == {"train"}


def test_a_hash_in_an_id_is_part_of_the_id_not_a_comment(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "dog#1")
    write_sample(raw, "dog#2")
    write_image_sets(raw, {"train": ["dog#1"], "val": ["dog#2"]})
    result = validate(raw)
    assert codes(result) == []
    assert {row.id: row.split for row in result.rows} == {"dog#1": "train", "dog#2": "val"}


def test_a_list_written_on_windows_with_a_bom_assigns_splits(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "000001")
    write_sample(raw, "000002")
    main = raw / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_bytes(b"\xef\xbb\xbf000001\r\n")
    (main / "val.txt").write_bytes(b"\xef\xbb\xbf000002.jpg\r\n")
    assert {row.id: row.split for row in validate(raw).rows} == {"000001": "train", "000002": "val"}


# ---------------------------------------------------------------- nothing to train on


def test_an_empty_folder_is_an_error_naming_what_it_holds(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (raw / "README.txt").write_text("hello")
    result = validate(raw)
    assert codes(result) == [(".", "dataset_empty")]
    [message] = messages(result, "dataset_empty")
    assert "no images or annotations found" in message and ".zip 1" in message and "visapp ingest" in message


def test_nothing_accepted_is_an_error_naming_the_most_common_reasons(tmp_path):
    raw = tmp_path / "raw"
    for stem in ("a", "b", "c"):
        write_sample(raw, stem, objects=[Obj("zebra")])
    write_sample(raw, "d", with_image=False)
    result = validate(raw)
    [message] = messages(result, "dataset_empty")
    assert "none of the 4 samples was accepted" in message
    assert message.index("class_unknown (3)") < message.index("image_missing (1)")


def test_a_dataset_with_accepted_samples_is_not_empty(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a")
    write_sample(raw, "b", image=b"not an image")
    assert "dataset_empty" not in validate(raw).report["by_code"]


def test_an_unreadable_symlink_says_what_is_wrong_with_it(tmp_path):
    raw = tmp_path / "raw"
    write_sample(raw, "a")
    write_sample(raw, "b", with_image=False)
    (raw / "JPEGImages" / "b.jpg").symlink_to(tmp_path / "gone.jpg")
    write_sample(raw, "c", with_image=False)
    (raw / "JPEGImages" / "c.jpg").symlink_to(raw / "JPEGImages" / "c.jpg")
    result = validate(raw)
    by_path = {i["path"]: i["message"] for i in result.report["issues"] if i["code"] == "image_unreadable"}
    assert "symbolic link to" in by_path["JPEGImages/b.jpg"] and "does not exist" in by_path["JPEGImages/b.jpg"]
    assert "loops" in by_path["JPEGImages/c.jpg"]
    assert "permission" not in by_path["JPEGImages/b.jpg"] + by_path["JPEGImages/c.jpg"]
