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
    assert "permissions" in unreadable[0]["message"]


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
    assert [(i["path"], i["code"]) for i in report["issues"]] == [("ImageSets/Main/val.txt", "path_unreadable")]
