"""What cannot be read is reported, never skipped: folders and ImageSets lists without read permission.

Tests run as root here, which reads anything; `unshare --user` runs the check as a user without that power.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from factory import write_image_sets, write_sample
from visapp.formats.report import QUALITY_CODES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a user namespace"),
]

CHECK = "import sys; from visapp.cli import main; sys.exit(main(sys.argv[1:]))"


def check_unprivileged(raw, report):
    return subprocess.run(
        [
            "unshare",
            "--user",
            sys.executable,
            "-c",
            CHECK,
            "check",
            str(raw),
            "--classes",
            "circle",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_unreadable_annotations_folder_is_an_error_naming_it(tmp_path):
    raw = tmp_path / "raw"
    for stem in ("a", "b"):
        write_sample(raw, stem)
    (raw / "Annotations").chmod(0)
    try:
        proc = check_unprivileged(raw, tmp_path / "report.json")
    finally:
        (raw / "Annotations").chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    unreadable = [i for i in report["issues"] if i["code"] == "path_unreadable"]
    assert [(i["path"], i["severity"]) for i in unreadable] == [("Annotations", "error")]
    assert "permission denied" in unreadable[0]["message"] and "chmod" in unreadable[0]["message"]
    # The images are not taken for backgrounds: their annotations may be in the folder that cannot be read.
    images = [i for i in report["issues"] if i["path"].startswith("JPEGImages/")]
    assert [(i["code"], i["severity"]) for i in images] == [("annotation_missing", "error")] * 2
    assert all("the annotation folder Annotations cannot be read" in i["message"] for i in images)
    assert report["accepted"] == 0


def test_an_unreadable_images_folder_is_named_in_each_annotation_issue(tmp_path):
    raw = tmp_path / "raw"
    for stem in ("a", "b"):
        write_sample(raw, stem)
    (raw / "JPEGImages").chmod(0)
    try:
        proc = check_unprivileged(raw, tmp_path / "report.json")
    finally:
        (raw / "JPEGImages").chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    missing = [i for i in report["issues"] if i["code"] == "image_missing"]
    assert [i["path"] for i in missing] == ["Annotations/a.xml", "Annotations/b.xml"]
    assert all("the image folder JPEGImages cannot be read" in i["message"] for i in missing)
    assert not any("add the image" in i["message"] for i in missing)


def test_an_unreadable_imagesets_list_is_an_error_not_a_hash_split(tmp_path):
    raw = tmp_path / "raw"
    for stem in ("a", "b"):
        write_sample(raw, stem)
    write_image_sets(raw, {"train": ["a"], "val": ["b"]})
    listing = raw / "ImageSets" / "Main" / "val.txt"
    listing.chmod(0)
    try:
        proc = check_unprivileged(raw, tmp_path / "report.json")
    finally:
        listing.chmod(0o644)
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    found = [(i["path"], i["code"]) for i in report["issues"] if i["code"] not in QUALITY_CODES]
    assert found == [("ImageSets/Main/val.txt", "path_unreadable")]
