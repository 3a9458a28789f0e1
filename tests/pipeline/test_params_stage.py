"""conf/ and params.yaml cannot drift apart silently, and a bad param is refused before any output is deleted.

One trained project (module scope, a tiny training) takes every route: conf/ edited without recomposing, a
hand edit of params.yaml, `dvc exp apply` of an experiment, a misspelt key and a value out of range given to
`dvc exp run -S`. Each test puts the project back as it found it.
"""

from __future__ import annotations

import pytest

from conftest import Project, dvc_init, tree_digest
from factory import TINY_TRAIN

pytestmark = pytest.mark.slow

OUTPUTS = ["data/validated", "data/yolo", "data/metadata", "models/yolo"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Project:
    from conftest import _copy_project

    root = tmp_path_factory.mktemp("params") / "project"
    root.mkdir()
    _copy_project(root)
    project = Project(root)
    project.run("git", "init", "-q", "-b", "main")
    dvc_init(project, core={"analytics": "false"}, hydra={"enabled": "true"})
    (root / "conf" / "train" / "cpu_small.yaml").write_text(TINY_TRAIN)
    project.run("visapp", "params", "compose")
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("tiny project")
    project.run("dvc", "repro")
    project.commit("trained")
    return project


@pytest.fixture
def project(trained: Project):
    """The trained project; put back as committed (and its outputs as trained) after the test."""
    yield trained
    trained.run("git", "checkout", "-q", "--", ".")
    trained.run("git", "clean", "-q", "-fd", "conf")
    trained.run("dvc", "checkout", "-q", "--force")


def outputs(project: Project) -> dict[str, str]:
    return tree_digest(project.root, tuple(OUTPUTS))


def test_dvc_repro_after_editing_conf_stops_before_any_stage_and_says_make_params(project):
    before = outputs(project)
    train = project.root / "conf" / "train" / "cpu_small.yaml"
    train.write_text(train.read_text().replace("epochs: 1", "epochs: 2"))
    proc = project.run("dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "params.yaml disagrees with conf/ (train.epochs: 1 in params.yaml, 2 from conf/)" in proc.stderr
    assert "run `make params`" in proc.stderr
    assert "Running stage 'train'" not in proc.stdout and outputs(project) == before


def test_a_hand_edit_of_params_yaml_is_refused_by_repro_and_by_the_commit_hook(project):
    before = outputs(project)
    params = project.root / "params.yaml"
    params.write_text(params.read_text().replace("lr0: 0.002", "lr0: 0.003"))
    proc = project.run("dvc", "repro", check=False)
    assert proc.returncode != 0 and "train.lr0: 0.003 in params.yaml, 0.002 from conf/" in proc.stderr
    assert "visapp params sync" in proc.stderr and outputs(project) == before
    hook = project.run("visapp", "params", "check", check=False)  # what the pre-commit hook runs
    assert hook.returncode == 2 and "Traceback" not in hook.stderr
    assert hook.stderr.startswith("error: params check: params.yaml disagrees with conf/")


def test_a_misspelt_key_is_refused_before_any_output_is_deleted(project):
    before = outputs(project)
    # Hydra itself refuses a key it does not know (nothing runs), and suggests `+`: then the params stage
    # refuses it, naming the key that was meant, before DVC deletes the weights to retrain.
    hydra = project.run("dvc", "exp", "run", "-S", "train.epoch=3", check=False)
    assert hydra.returncode != 0 and outputs(project) == before
    proc = project.run("dvc", "exp", "run", "-S", "+train.epoch=3", check=False)
    assert proc.returncode != 0
    assert "train.epoch is not a param: did you mean train.epochs?" in proc.stderr
    assert outputs(project) == before
    check = project.run("visapp", "params", "check", "train.epoch=3", check=False)
    assert check.returncode == 2 and "did you mean train.epochs?" in check.stderr


def test_a_value_out_of_range_is_refused_before_any_output_is_deleted(project):
    before = outputs(project)
    proc = project.run("dvc", "exp", "run", "-S", "train.imgsz=-5", check=False)
    assert proc.returncode != 0
    assert "train.imgsz = -5 is out of range: it must be at least 32 and at most 8192" in proc.stderr
    assert outputs(project) == before


def test_an_applied_experiment_is_written_back_into_conf(project):
    project.run("dvc", "exp", "run", "-n", "faster", "-S", "train.lr0=0.004", "-S", "model=yolov8s")
    project.run("git", "checkout", "-q", "--", ".")  # the workspace as committed; the experiment is kept by DVC
    project.run("dvc", "exp", "apply", "faster")
    check = project.run("visapp", "params", "check", check=False)
    assert check.returncode == 2 and "visapp params sync" in check.stderr
    synced = project.run("visapp", "params", "sync")
    assert "config.yaml: model: yolov8n -> yolov8s" in synced.stdout
    assert "train/cpu_small.yaml: lr0 = 0.004" in synced.stdout
    project.run("visapp", "params", "check")  # conf/ composes to params.yaml again
    before = (project.root / "params.yaml").read_text()
    project.run("visapp", "params", "compose")
    assert (project.root / "params.yaml").read_text() == before
    assert "# " in (project.root / "conf" / "config.yaml").read_text()  # its comments are kept
