"""deploy/train/pull.sh, what a GPU runner pulls before `dvc exp run`, against a real S3 remote (moto on loopback)
that holds only data/raw: a `dvc repro` was committed, its outputs never pushed. A plain `dvc pull` fails there;
the training needs only the data, and rebuilds the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT, Project, run, tree_digest

pytestmark = pytest.mark.integration

PULL = REPO_ROOT / "deploy" / "train" / "pull.sh"


@pytest.fixture(scope="module")
def origin(tmp_path_factory, s3_server) -> tuple[Project, str]:
    """A project whose commit records data stages the remote does not hold: only data/raw was pushed."""
    from conftest import _copy_project, dvc_init

    root = tmp_path_factory.mktemp("train-pull") / "origin"
    root.mkdir()
    _copy_project(root)
    project = Project(root)
    project.run("git", "init", "-q", "-b", "main")
    dvc_init(project, core={"analytics": "false", "autostage": "true"}, hydra={"enabled": "true"})
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    project.run("dvc", "add", "-q", "data/raw")
    s3_server.attach(project, "train-pull")
    project.commit("data")
    project.run("dvc", "repro", "metadata")  # the data stages: dvc.lock names their outputs
    project.commit("data stages")
    project.run("dvc", "push", "data/raw.dvc")
    return project, s3_server.endpoint


def clone(origin: tuple[Project, str], dest: Path) -> Project:
    """A fresh checkout, as the runner's: git only, then the remote's endpoint (the runner's comes from its config)."""
    project, endpoint = origin
    run(["git", "clone", "-q", str(project.root), str(dest)], dest.parent)
    copy = Project(dest)
    copy.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint)
    return copy


def test_a_plain_dvc_pull_fails_when_a_stage_output_is_not_in_the_remote(origin, tmp_path):
    proc = clone(origin, tmp_path / "runner").run("dvc", "pull", check=False)

    assert proc.returncode != 0
    assert "data/validated" in proc.stderr or "data/yolo" in proc.stderr, proc.stderr


def test_pull_sh_pulls_the_data_and_lets_the_stages_rebuild_the_rest(origin, tmp_path):
    runner = clone(origin, tmp_path / "runner")

    proc = runner.run("bash", str(PULL), check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree_digest(runner.root, ("data/raw",)) == tree_digest(origin[0].root, ("data/raw",))
    assert not (runner.root / "data" / "yolo").exists()
    runner.run("dvc", "repro", "metadata")  # what `dvc exp run` does first: the missing outputs are rebuilt
    assert runner.run("dvc", "status", "metadata").stdout.strip().endswith("up to date."), "rebuilt as recorded"


def test_pull_sh_fails_when_the_data_itself_is_not_in_the_remote(origin, tmp_path):
    project, endpoint = origin
    empty = tmp_path / "empty"
    empty.mkdir()
    run(["git", "clone", "-q", str(project.root), str(empty / "runner")], empty)
    runner = Project(empty / "runner")
    # the same commit, another bucket: nothing was pushed there
    runner.run("dvc", "remote", "modify", "--local", "storage", "url", "s3://train-pull-empty/dvc")
    runner.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="train-pull-empty")

    proc = runner.run("bash", str(PULL), check=False)

    assert proc.returncode != 0
    assert "data/raw" in proc.stdout + proc.stderr
