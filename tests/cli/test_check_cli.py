"""`visapp check PATH [--classes a,b,c] [--report FILE]`: summary on stdout, exit 1 on rejects, 2 on user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from factory import Obj, truncated_jpeg, write_sample
from visapp.cli import main
from visapp.formats.report import CODES

pytestmark = pytest.mark.integration

VISAPP = Path(sys.executable).parent / "visapp"


def test_clean_folder_exits_0_and_prints_the_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: every class name is accepted
    write_sample(tmp_path / "voc", "a", objects=[Obj("anything")])
    assert main(["check", "voc"]) == 0
    assert capsys.readouterr().out.startswith("validated 1 sample: 1 accepted, 0 rejected")


def test_rejected_sample_exits_1_and_names_it(tmp_path, capsys):
    write_sample(tmp_path, "good", objects=[Obj("cat")])
    write_sample(tmp_path, "bad", image=truncated_jpeg())
    assert main(["check", str(tmp_path), "--classes", "cat,dog"]) == 1
    out = capsys.readouterr().out
    assert "1 rejected" in out and "image_truncated" in out and "JPEGImages/bad.jpg" in out


def test_classes_option_makes_other_names_unknown(tmp_path, capsys):
    write_sample(tmp_path, "a", objects=[Obj("zebra")])
    assert main(["check", str(tmp_path), "--classes", " cat , dog "]) == 1
    assert "class_unknown" in capsys.readouterr().out


def test_classes_default_to_params_yaml_of_the_working_folder(tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"]["classes"] = ["cat"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_sample(tmp_path / "voc", "a", objects=[Obj("zebra")])
    monkeypatch.chdir(tmp_path)
    assert main(["check", "voc"]) == 1
    assert "class_unknown" in capsys.readouterr().out


def test_report_option_writes_report_json(tmp_path, capsys):
    write_sample(tmp_path / "voc", "a", objects=[Obj("cat", (-1, 0, 20, 20))])
    assert main(["check", str(tmp_path / "voc"), "--classes", "cat", "--report", str(tmp_path / "r/report.json")]) == 0
    report = json.loads((tmp_path / "r/report.json").read_text())
    validity = {code: n for code, n in report["by_code"].items() if not CODES[code].quality}
    assert validity == {"bbox_clipped": 1} and report["accepted"] == 1
    capsys.readouterr()


def test_missing_folder_exits_2_with_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [str(VISAPP), "check", str(tmp_path / "missing")], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "is not a folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_console_script_exit_status_on_rejects(tmp_path):
    write_sample(tmp_path, "a", size=(10, 10))  # size_mismatch
    proc = subprocess.run(
        [str(VISAPP), "check", str(tmp_path), "--classes", "circle"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "size_mismatch" in proc.stdout


def test_an_empty_folder_exits_1_saying_nothing_was_found(tmp_path, capsys):
    (tmp_path / "voc").mkdir()
    assert main(["check", str(tmp_path / "voc")]) == 1
    assert "dataset_empty" in capsys.readouterr().out


def test_non_utf8_names_on_a_strict_ascii_terminal_print_no_traceback(tmp_path):
    """Names as unzip leaves a Windows archive's (latin-1 bytes), a terminal that takes ASCII only."""
    raw = tmp_path / "voc"
    write_sample(raw, os.fsdecode(b"Se\xf1al"), filename="Señal.jpg")
    write_sample(raw, "日本")
    env = {**os.environ, "PYTHONIOENCODING": "ascii:strict", "LC_ALL": "C"}
    proc = subprocess.run(
        [str(VISAPP), "check", str(raw), "--report", str(tmp_path / "report.json")],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "name_not_utf8" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert {i["path"] for i in report["issues"] if i["code"] == "name_not_utf8"} == {
        "JPEGImages/Se\\xf1al.jpg",
        "Annotations/Se\\xf1al.xml",
    }
