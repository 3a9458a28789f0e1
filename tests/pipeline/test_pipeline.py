"""The data pipeline through real git + DVC: validate -> convert -> metadata on the built-in sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tree_digest

pytestmark = pytest.mark.integration

DATA_STAGES = ["validate", "convert", "metadata"]
DATA_OUTPUTS = ["data/validated", "data/yolo", "data/metadata"]


def outputs_digest(project_root: Path) -> dict[str, str]:
    return tree_digest(project_root, DATA_OUTPUTS)


@pytest.fixture
def sample_project(make_project):
    """A project whose data/raw is a small built-in sample, `dvc add`ed and committed."""
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "24")
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("sample data")
    return project


@pytest.mark.integration
def test_repro_runs_data_stages_then_nothing_and_status_is_clean(sample_project):
    first = sample_project.run("dvc", "repro", "metadata")
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in first.stdout
    second = sample_project.run("dvc", "repro", "metadata")
    assert "Running stage" not in second.stdout
    status = sample_project.run("dvc", "status", "metadata")
    assert "up to date" in status.stdout
    # Nothing was written outside the declared outputs: git sees only dvc.lock, the git-tracked metrics
    # (cache: false) and the .gitignore entries DVC adds for cached outputs.
    git = sample_project.run("git", "status", "--porcelain", "--untracked-files=all")
    changed = {line[3:] for line in git.stdout.splitlines()}
    assert {p for p in changed if not p.endswith(".gitignore")} == {
        "dvc.lock",
        "data/params.checked",
        "data/validated/report.json",
        "data/validated/source.json",
    }


@pytest.mark.integration
def test_forced_repro_gives_byte_identical_outputs(sample_project):
    sample_project.run("dvc", "repro", "metadata")
    before = outputs_digest(sample_project.root)
    assert any(k.endswith("manifest.jsonl") for k in before)
    assert any(k.endswith("dataset_metadata.json") for k in before)
    assert any(k.endswith(".png") for k in before)
    sample_project.run("dvc", "repro", "-f", "metadata")
    assert outputs_digest(sample_project.root) == before


def _break_samples(raw: Path) -> set[str]:
    """Corrupt two samples of a sample dataset; returns the image stems that must be rejected."""
    images = sorted((raw / "JPEGImages").glob("*.jpg"))
    truncated, unknown = images[0], images[1]
    truncated.write_bytes(truncated.read_bytes()[:-200])  # JPEG without its end marker
    xml = raw / "Annotations" / f"{unknown.stem}.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>zebra_", 1))  # a class not in data.classes
    return {truncated.stem, unknown.stem}


@pytest.mark.integration
def test_on_error_skip_sends_exactly_the_good_samples_to_yolo(sample_project):
    raw = sample_project.root / "data/raw"
    bad = _break_samples(raw)
    sample_project.run("dvc", "add", "-q", "data/raw")
    sample_project.set_params("data.on_error=skip")
    sample_project.run("dvc", "repro", "convert")

    report = json.loads((sample_project.root / "data/validated/report.json").read_text())
    assert report["rejected"] == 2
    assert {"image_truncated", "class_unknown"} <= set(report["by_code"])
    listed = set()
    for split_list in (sample_project.root / "data/yolo").glob("*.txt"):
        listed |= {Path(line).stem for line in split_list.read_text().splitlines()}
    all_images = {p.stem for p in (raw / "JPEGImages").iterdir()}
    assert listed == all_images - bad
    labels = {p.stem for p in (sample_project.root / "data/yolo/labels").rglob("*.txt")}
    assert labels == all_images - bad


@pytest.mark.integration
def test_on_error_fail_exits_non_zero_after_writing_the_report(sample_project):
    _break_samples(sample_project.root / "data/raw")
    sample_project.run("dvc", "add", "-q", "data/raw")
    proc = sample_project.run("dvc", "repro", "validate", check=False)
    assert proc.returncode != 0
    report = json.loads((sample_project.root / "data/validated/report.json").read_text())
    assert report["rejected"] == 2
    assert "image_truncated" in proc.stdout + proc.stderr  # the summary names the problems
    assert not (sample_project.root / "data/yolo").exists()


_IMPORT_PROBE = """
import runpy, sys
sys.argv = [{script!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    assert not exc.code, f"stage exited {{exc.code}}"
# cv2 is light (~0.1 s) and validation needs it: images.inspect_image checks each image with OpenCV, the reader
# Ultralytics trains with (tests/dataset/test_fuzz.py).
heavy = sorted(m for m in ("torch", "ultralytics", "mlflow") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.integration
def test_data_stages_import_neither_torch_nor_ultralytics(sample_project):
    for stage in DATA_STAGES:
        probe = _IMPORT_PROBE.format(script=f"stages/{stage}.py")
        proc = sample_project.run(sys.executable, "-c", probe)
        assert "HEAVY=\n" in proc.stdout, f"{stage} imported {proc.stdout.split('HEAVY=')[-1]}"


def test_stage_reports_a_bad_param_without_a_traceback(make_project):
    project = make_project()
    project.set_params("data.on_error=ignore")
    proc = subprocess.run([sys.executable, "stages/validate.py"], cwd=project.root, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "data.on_error" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_only_validate_reads_data_raw_and_a_changed_image_still_reruns_every_stage_after_it(sample_project):
    """data/raw is checked once per `dvc repro` (by validate, its one reader in dvc.yaml); the later stages depend
    on validate's manifest, which names every accepted image's content hash, so an image whose bytes change still
    reruns them all. data/yolo likewise is checked once, as convert's output: the stages after it depend on its
    digest.json."""
    import yaml

    stages = yaml.safe_load((sample_project.root / "dvc.yaml").read_text())["stages"]
    readers = sorted(name for name, stage in stages.items() if "${paths.raw}" in stage.get("deps", []))
    assert readers == ["validate"]
    assert not [name for name, stage in stages.items() if "${paths.yolo}" in stage.get("deps", [])]
    for name in ("metadata", "train", "evaluate"):
        assert {"${paths.validated}/manifest.jsonl", "${paths.yolo}/digest.json"} <= set(stages[name]["deps"])

    sample_project.run("dvc", "repro", "metadata")
    from PIL import Image

    image = sample_project.root / "data/raw/JPEGImages/000003.jpg"
    Image.open(image).save(image, "JPEG", quality=70)  # the same picture, other bytes
    sample_project.run("dvc", "add", "-q", "data/raw")
    again = sample_project.run("dvc", "repro", "metadata")
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in again.stdout, again.stdout

    # A label edited by hand in data/yolo: convert's output changed, so DVC restores it (from its run cache, or by
    # running convert); the digest is the same again, and nothing after convert reruns.
    label = sample_project.root / "data/yolo/labels/train"
    label = sorted(label.rglob("*.txt"))[0]
    written = label.read_bytes()
    label.write_bytes(b"0 0.5 0.5 0.1 0.1\n" + written)
    edited = sample_project.run("dvc", "repro", "metadata")
    assert "Stage 'convert' didn't change" not in edited.stdout and "Stage 'metadata' didn't change" in edited.stdout
    assert label.read_bytes() == written

    # An annotation edit that changes no box: validate checks it, convert has nothing new to write; metadata
    # reruns, as it records which version of data/raw it describes (raw_dvc_hash, from data/raw.dvc).
    xml = sample_project.root / "data/raw/Annotations/000003.xml"
    xml.write_text(xml.read_text() + "\n")
    sample_project.run("dvc", "add", "-q", "data/raw")
    last = sample_project.run("dvc", "repro", "metadata")
    assert "Running stage 'validate'" in last.stdout and "Running stage 'convert'" not in last.stdout, last.stdout
    assert "Running stage 'metadata'" in last.stdout
    metadata = json.loads((sample_project.root / "data/metadata/dataset_metadata.json").read_text())
    assert f"md5: {metadata['raw_dvc_hash']}" in (sample_project.root / "data/raw.dvc").read_text()
