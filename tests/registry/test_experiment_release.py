"""The README's route from an experiment to a release, command by command: `dvc exp apply NAME`,
`visapp params sync`, `git add -A && git commit`, `visapp release`, with nothing else in between."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

TINY = [
    "train.epochs=1",
    "train.imgsz=64",
    "train.batch=4",
    "train.workers=0",
    "train.device=cpu",
    "train.extra.plots=false",  # Ultralytics' plots are most of a tiny training's time
    "tracking.experiment=vis-experiment-release",
]


def test_an_applied_experiment_is_released_as_the_readme_says(make_project):
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    project.run("dvc", "add", "-q", "data/raw")
    project.set_params(*TINY)
    project.commit("sample data, tiny training")
    project.run("dvc", "repro")
    project.commit("trained")

    project.run("dvc", "exp", "run", "-n", "better", "-S", "train.lr0=0.005")
    project.run("git", "checkout", "-q", "--", ".")  # back to the commit, as after looking at `dvc exp show`
    project.run("dvc", "checkout", "-q")

    project.run("dvc", "exp", "apply", "better")
    synced = project.run("visapp", "params", "sync")
    project.commit("the experiment better")
    released = project.run("visapp", "release", check=False)

    assert "cpu_small.yaml: lr0 = 0.005" in synced.stdout and "params stage rerun" in synced.stdout, synced.stdout
    assert released.returncode == 0, released.stdout + released.stderr
    assert released.stdout.startswith("released yolo@v1.0.0"), released.stdout
    assert project.run("dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    assert project.run("git", "status", "--porcelain").stdout == ""
    assert "lr0: 0.005" in (project.root / "conf" / "train" / "cpu_small.yaml").read_text()
