"""`visapp diff REV_A REV_B` on a real git + DVC repository: two commits of data/raw with planted changes.

One repository for the module: v1 (tagged as the model version yolo@v1.0.0) and v2 on main, with a sample
added, one removed, one renamed, and each kind of relabel. Each test reads that state; none changes it for long.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, Project, dvc_init
from factory import Obj, write_sample

pytestmark = pytest.mark.integration

CIRCLE = (10, 10, 40, 30)  # 30 x 20, centre (25, 20)
MOVED = (14, 10, 44, 30)  # 4 px to the right
GROWN = (8, 8, 42, 32)  # 34 x 24 around the same centre
CORNER = (44, 30, 60, 46)  # far from CIRCLE
UNCHANGED = [f"u{i}" for i in range(6)]
GENEROUS = ["--max-removed-fraction", "0.5", "--max-relabelled-fraction", "0.5", "--max-class-drift", "0.5"]


@dataclass
class Repo:
    project: Project

    def diff(self, *args: str, check: bool = False):
        return self.project.run("visapp", "diff", *args, check=check)


def _write_v1(raw: Path) -> None:
    for ident in [*UNCHANGED, "gone", "old_name", "moved", "resized", "reclassed", "box_added"]:
        write_sample(raw, ident, objects=[Obj("circle", CIRCLE)])
    write_sample(raw, "box_removed", objects=[Obj("circle", CIRCLE), Obj("square", CORNER)])


def _write_v2(raw: Path) -> None:
    """v1 with the planted changes, edited in place as a person would."""
    (raw / "JPEGImages" / "gone.jpg").unlink()
    (raw / "Annotations" / "gone.xml").unlink()
    image = (raw / "JPEGImages" / "old_name.jpg").read_bytes()
    (raw / "JPEGImages" / "old_name.jpg").unlink()
    (raw / "Annotations" / "old_name.xml").unlink()
    write_sample(raw, "new_name", image=image, objects=[Obj("circle", CIRCLE)])
    for ident, objects in [
        ("moved", [Obj("circle", MOVED)]),
        ("resized", [Obj("circle", GROWN)]),
        ("reclassed", [Obj("square", CIRCLE)]),
        ("box_added", [Obj("circle", CIRCLE), Obj("square", CORNER)]),
        ("box_removed", [Obj("circle", CIRCLE)]),
    ]:
        write_sample(raw, ident, image=(raw / "JPEGImages" / f"{ident}.jpg").read_bytes(), objects=objects)
    write_sample(raw, "fresh", objects=[Obj("circle", CIRCLE)])


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    root = tmp_path_factory.mktemp("diff") / "project"
    root.mkdir()
    shutil.copytree(REPO_ROOT / "conf", root / "conf")
    shutil.copy2(REPO_ROOT / "params.yaml", root / "params.yaml")
    project = Project(root)
    project.run("git", "init", "-q", "-b", "main")
    dvc_init(project, core={"analytics": "false"})
    project.commit("project, no data yet")
    _write_v1(root / "data" / "raw")
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("data v1")
    project.run("git", "tag", "-a", "yolo@v1.0.0", "-m", "v1")
    _write_v2(root / "data" / "raw")
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("data v2")
    return Repo(project)


def test_diff_reports_exactly_the_planted_changes_as_json_and_metrics(repo):
    result = repo.diff("yolo@v1.0.0", "main", "--json", "--metrics", "diff.json", *GENEROUS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    diff = report["diff"]
    assert report["before"]["revision"] == "yolo@v1.0.0" and report["after"]["revision"] == "main"
    assert report["before"]["skipped"] == [] and report["after"]["skipped"] == []
    assert diff["added"] == ["fresh"]
    assert diff["removed"] == ["gone"]
    assert diff["renamed"] == [["old_name", "new_name"]]
    assert diff["replaced"] == []
    assert diff["unchanged"] == len(UNCHANGED)

    def box(name, corners):
        return dict(zip(["name", "xmin", "ymin", "xmax", "ymax"], [name, *corners], strict=True))

    changes = {change["id_after"]: change for change in diff["relabelled"]}
    assert sorted(changes) == ["box_added", "box_removed", "moved", "reclassed", "resized"]
    assert changes["box_added"]["added"] == [box("square", CORNER)] and changes["box_added"]["changed"] == []
    assert changes["box_removed"]["removed"] == [box("square", CORNER)] and changes["box_removed"]["added"] == []
    (moved,) = changes["moved"]["changed"]
    assert (moved["moved"], moved["resized"], moved["class_changed"], moved["centre_shift"]) == (True, False, False, 4)
    assert moved["before"] == box("circle", CIRCLE) and moved["after"] == box("circle", MOVED)
    (resized,) = changes["resized"]["changed"]
    assert (resized["moved"], resized["resized"], resized["class_changed"]) == (False, True, False)
    (reclassed,) = changes["reclassed"]["changed"]
    assert (reclassed["moved"], reclassed["resized"], reclassed["class_changed"], reclassed["iou"]) == (
        False,
        False,
        True,
        1.0,
    )

    metrics = json.loads((repo.project.root / "diff.json").read_text())
    assert metrics == report["headline"]
    assert all(isinstance(value, int | float) for value in metrics.values())  # flat: what DVC metrics read
    expected = {"samples_before": 13, "samples_after": 13, "added": 1, "removed": 1, "renamed": 1, "relabelled": 5}
    assert {key: metrics[key] for key in expected} == expected
    assert (metrics["boxes_moved"], metrics["boxes_resized"], metrics["boxes_class_changed"]) == (1, 1, 1)
    assert (metrics["boxes_added"], metrics["boxes_removed"]) == (1, 1)
    assert metrics["removed_fraction"] == round(1 / 13, 6) and metrics["relabelled_fraction"] == round(5 / 12, 6)
    # 13 circles and a square before, 12 circles and 2 squares after
    assert metrics["class_total_variation"] == round(1 / 14, 6)
    assert report["failures"] == []


def test_the_gate_fails_past_params_defaults_and_the_table_says_why(repo):
    limits = yaml.safe_load((repo.project.root / "params.yaml").read_text())["diff"]
    assert limits["max_removed_fraction"] < 1 / 13 and limits["max_relabelled_fraction"] < 5 / 12  # conf/'s defaults
    result = repo.diff("yolo@v1.0.0", "main")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "samples  13 -> 13: added 1, removed 1, renamed 1, image replaced 0, relabelled 5, unchanged 6" in out
    assert "in samples of both versions: moved 1, resized 1, class changed 1, added 1, removed 1" in out
    assert "added: fresh" in out and "removed: gone" in out and "renamed: old_name -> new_name" in out
    assert f"gate: FAIL: removed_fraction 0.076923 > max_removed_fraction {limits['max_removed_fraction']:g}" in out
    assert f"relabelled_fraction 0.416667 > max_relabelled_fraction {limits['max_relabelled_fraction']:g}" in out
    passing = repo.diff("yolo@v1.0.0", "main", *GENEROUS)
    assert passing.returncode == 0 and "gate: pass" in passing.stdout


def test_the_same_revision_twice_is_no_change(repo):
    result = repo.diff("main", "HEAD")
    assert result.returncode == 0, result.stderr
    assert "no change: the same samples, images and boxes" in result.stdout and "gate: pass" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope", "main"], "unknown revision 'nope'"),
        (["yolo@v9.0.0", "main"], "no tag yolo@v9.0.0"),
        (["HEAD~2", "main"], "no dataset at HEAD~2"),
        (["main", "HEAD", "--max-class-drift", "2"], "diff.max_class_drift = 2.0 is out of range"),
    ],
)
def test_a_user_error_is_one_line_without_a_traceback(repo, args, words):
    result = repo.diff(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_data_in_neither_the_cache_nor_a_remote_is_a_clear_error(repo):
    cache = repo.project.root / ".dvc" / "cache"
    aside = cache.with_name("cache-aside")
    cache.rename(aside)
    try:
        result = repo.diff("yolo@v1.0.0", "main")
    finally:
        aside.rename(cache)
    assert result.returncode == 2
    assert "neither in the local DVC cache nor in the remote" in result.stderr and "Traceback" not in result.stderr
