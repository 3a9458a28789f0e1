"""Model versions end to end: two trainings -> two GTO releases -> a fresh clone gets either back from S3 (moto).

The slow tests share one project (module scope): sample data, two tiny trainings, `visapp release --push` to a
bare Git origin and a moto S3 remote. Tests only read that state; one that changes the project or its origin
gets a private copy of both (`own_released`), so no test depends on the order the others run in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from conftest import Project, _copy_project, dvc_init, tree_digest
from visapp.errors import VisError
from visapp.integrations import gto
from visapp.registry.refs import ModelRef, parse_ref
from visapp.registry.release import tag_message
from visapp.registry.versions import format_versions, version_tags

pytestmark = pytest.mark.unit

TINY = [
    "train.epochs=1",
    "train.imgsz=64",
    "train.batch=4",
    "train.workers=0",
    "train.device=cpu",
    "train.extra.plots=false",  # Ultralytics' plots are most of a tiny training's time
    "tracking.experiment=vis-registry",
]
OUTPUTS = ["data/raw", "data/validated", "data/yolo", "data/metadata", "models/yolo"]
WEIGHTS = "models/yolo/weights/best.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- fast: references, messages, version numbers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("yolo@v1.0.0", ModelRef("yolo", version="v1.0.0")),
        ("yolo@2.0.0", ModelRef("yolo", version="v2.0.0")),
        ("v3.0.0", ModelRef("yolo", version="v3.0.0")),
        ("yolo#prod", ModelRef("yolo", stage="prod")),
        ("yolo", ModelRef("yolo")),
        ("detector@v1.2.3", ModelRef("detector", version="v1.2.3")),
    ],
)
def test_parse_ref_reads_versions_stages_and_names(text, ref):
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", ["yolo@v1", "yolo@latest", "yolo@v1.0", "a b", "yolo@v1.0.0@x", ""])
def test_parse_ref_refuses_what_is_not_a_full_semver_version(text):
    with pytest.raises(VisError, match="not a model version"):
        parse_ref(text)


def test_tag_message_holds_metrics_fingerprint_and_run():
    metrics = {"mAP50": 0.5, "mAP50-95": 0.25, "precision": 0.75, "recall": 0.5, "epochs": 3}
    message = tag_message("yolo", "v1.0.0", metrics, {"fingerprint": "ab" * 32, "raw_dvc_hash": "cd.dir"}, "r1")
    lines = message.splitlines()
    assert lines[0] == "yolo v1.0.0: mAP50 0.5000, mAP50-95 0.2500, precision 0.7500, recall 0.5000"
    assert json.loads(lines[2].removeprefix("metrics: ")) == metrics
    assert f"dataset_fingerprint: {'ab' * 32}" in lines
    assert "raw_dvc_hash: cd.dir" in lines
    assert "mlflow_run_id: r1" in lines


@pytest.mark.integration
def test_the_next_version_is_gtos_major_bump_of_the_latest(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "one")
    assert gto.next_major(tmp_path, "yolo") == "v1.0.0"
    git("tag", "-a", "yolo@v1.0.0", "-m", "v1")
    git("tag", "-a", "yolo@v3.0.0", "-m", "v3")  # v2 skipped (deleted, say): the latest is v3
    git("tag", "yolo@v9", "-m", "not semver")  # GTO ignores it, and so do we
    git("tag", "other@v7.0.0", "-m", "another artifact")
    assert gto.next_major(tmp_path, "yolo") == "v4.0.0"
    assert set(version_tags(tmp_path)) == {"yolo@v1.0.0", "yolo@v3.0.0"}


def test_format_versions_without_versions_says_how_to_make_one():
    assert "visapp release" in format_versions([])


# --- slow: one project, two trainings, two releases -----------------------------------------------------------


@dataclass
class Released:
    """The shared project and what each release looked like when it was made."""

    project: Project
    origin: Path
    env: dict[str, str]
    tracking_uri: str
    weights: dict[str, str] = field(default_factory=dict)  # tag -> sha256 of best.pt
    metrics: dict[str, dict] = field(default_factory=dict)  # tag -> metrics.json
    metadata: dict[str, dict] = field(default_factory=dict)  # tag -> dataset_metadata.json
    lr0: dict[str, float] = field(default_factory=dict)  # tag -> train.lr0
    stdout: dict[str, str] = field(default_factory=dict)  # tag -> `visapp release` output

    def run(self, *cmd: str, check: bool = True, cwd: Path | None = None):
        project = Project(cwd) if cwd else self.project
        return project.run(*cmd, check=check, env=self.env)

    def clone(self, dest: Path, endpoint: str) -> Project:
        """A fresh clone of origin, pointed at the moto endpoint as a user would in .dvc/config.local."""
        self.run("git", "clone", "-q", str(self.origin), str(dest))
        self.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint, cwd=dest)
        return Project(dest)


def _new_project(root: Path) -> Project:
    """What `make_project` does, for a module-scoped project."""
    root.mkdir()
    _copy_project(root)
    project = Project(root)
    project.run("git", "init", "-q", "-b", "main")
    dvc_init(project, core={"analytics": "false", "autostage": "true"}, hydra={"enabled": "true"})
    project.commit("project")
    return project


def _train_and_release(state: Released, lr0: float, *release_args: str) -> str:
    project = state.project
    project.set_params(*TINY, f"train.lr0={lr0}")
    project.commit(f"lr0 {lr0}")
    state.run("dvc", "repro")
    project.commit(f"trained with lr0 {lr0}")
    result = state.run("visapp", "release", "--push", *release_args)
    tag = result.stdout.split()[1]  # "released yolo@vN.0.0 on commit ..."
    state.stdout[tag] = result.stdout
    state.weights[tag] = sha256(project.root / WEIGHTS)
    state.metrics[tag] = json.loads((project.root / "models/yolo/metrics.json").read_text())
    state.metadata[tag] = json.loads((project.root / "data/metadata/dataset_metadata.json").read_text())
    state.lr0[tag] = lr0
    return tag


@pytest.fixture(scope="module")
def released(tmp_path_factory, s3_server, mlflow_server) -> Released:
    base = tmp_path_factory.mktemp("registry")
    project = _new_project(base / "project")
    origin = base / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    project.run("git", "remote", "add", "origin", str(origin))
    tracking_uri = mlflow_server.uri  # the session's server: its own experiment keeps these runs apart
    state = Released(project, origin, {"MLFLOW_TRACKING_URI": tracking_uri}, tracking_uri)
    state.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    state.run("dvc", "add", "-q", "data/raw")
    s3_server.attach(project, bucket="vis-registry")
    project.commit("sample data, S3 remote")
    project.run("git", "push", "-q", "origin", "main")
    assert _train_and_release(state, 0.01, "--stage", "prod") == "yolo@v1.0.0"
    assert _train_and_release(state, 0.002) == "yolo@v2.0.0"
    project.run("git", "push", "-q", "origin", "main")
    return state


@pytest.fixture
def own_released(released: Released, tmp_path: Path) -> Released:
    """A private copy of the released project and its Git origin, for a test that changes them (commits, tags,
    remote settings): the shared one stays as the two releases left it."""
    project, origin = tmp_path / "project", tmp_path / "origin.git"
    shutil.copytree(released.project.root, project, symlinks=True)
    shutil.copytree(released.origin, origin, symlinks=True)
    copy = replace(released, project=Project(project), origin=origin)
    copy.run("git", "remote", "set-url", "origin", str(origin))
    return copy


@pytest.mark.slow
def test_release_tags_each_training_as_the_next_major_version_with_its_metrics(released):
    tags = version_tags(released.project.root)
    assert set(tags) == {"yolo@v1.0.0", "yolo@v2.0.0"}
    assert released.weights["yolo@v1.0.0"] != released.weights["yolo@v2.0.0"]
    for tag, commit in tags.items():
        # The tag sits on the commit whose dvc.lock pins the weights it was released with.
        lock = released.run("git", "show", f"{commit}:dvc.lock").stdout
        assert "models/yolo/weights" in lock
        message = released.run("git", "tag", "-l", "--format=%(contents)", tag).stdout
        metrics_line = next(line for line in message.splitlines() if line.startswith("metrics: "))
        assert json.loads(metrics_line.removeprefix("metrics: ")) == released.metrics[tag]
        assert f"dataset_fingerprint: {released.metadata[tag]['fingerprint']}" in message
    assert "promoted: yolo#prod#1" in released.stdout["yolo@v1.0.0"]
    # --push pushed the tags to origin and the outputs to S3.
    remote_tags = released.run("git", "ls-remote", "--tags", str(released.origin)).stdout
    assert all(name in remote_tags for name in ("yolo@v1.0.0", "yolo@v2.0.0", "yolo#prod#1"))
    assert "files pushed to DVC remote 'storage'" in released.stdout["yolo@v1.0.0"]


@pytest.mark.slow
def test_release_tags_the_mlflow_run_of_the_training(released):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(released.tracking_uri)
    experiment = client.get_experiment_by_name("vis-registry")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_version = {run.data.tags.get("model_version"): run for run in runs}
    assert set(by_version) == {"yolo@v1.0.0", "yolo@v2.0.0"}
    for tag, run in by_version.items():
        assert float(run.data.params["train.lr0"]) == released.lr0[tag]
        assert f"MLflow run: {run.info.run_id}" in released.stdout[tag]


@pytest.mark.slow
def test_models_lists_versions_newest_first_with_stages(released):
    rows = json.loads(released.run("visapp", "models", "--json").stdout)
    assert [(row["tag"], row["stages"]) for row in rows] == [("yolo@v2.0.0", []), ("yolo@v1.0.0", ["prod"])]
    table = released.run("visapp", "models").stdout
    assert table.splitlines()[1].startswith("v2.0.0") and "prod" in table.splitlines()[2]


@pytest.mark.slow
def test_fresh_clone_checkout_of_v1_and_dvc_pull_restore_v1_weights(released, s3_server, tmp_path):
    clone = released.clone(tmp_path / "clone", s3_server.endpoint)
    released.run("git", "checkout", "-q", "yolo@v1.0.0", cwd=clone.root)
    released.run("dvc", "pull", cwd=clone.root)
    assert sha256(clone.root / WEIGHTS) == released.weights["yolo@v1.0.0"]
    assert "up to date" in released.run("dvc", "status", cwd=clone.root).stdout

    # `visapp model get` gives the same bytes without touching the workspace, from any checkout.
    released.run("git", "checkout", "-q", "main", cwd=clone.root)
    before = tree_digest(clone.root)
    got = released.run("visapp", "model", "get", "yolo@v1.0.0", "-o", str(tmp_path / "v1.pt"), cwd=clone.root)
    assert "wrote yolo@v1.0.0" in got.stdout
    assert sha256(tmp_path / "v1.pt") == released.weights["yolo@v1.0.0"]
    assert tree_digest(clone.root) == before
    released.run("visapp", "model", "get", "yolo#prod", "-o", str(tmp_path / "prod.pt"), cwd=clone.root)
    assert sha256(tmp_path / "prod.pt") == released.weights["yolo@v1.0.0"]
    latest = released.run("visapp", "model", "get", "yolo", "-o", str(tmp_path), cwd=clone.root)
    assert sha256(tmp_path / "best.pt") == released.weights["yolo@v2.0.0"], latest.stdout
    refused = released.run("visapp", "model", "get", "yolo@v1.0.0", "-o", str(tmp_path / "v1.pt"), check=False)
    assert refused.returncode == 2 and "exists" in refused.stderr and "--force" in refused.stderr
    missing = released.run("visapp", "model", "get", "yolo@v7.0.0", "-o", str(tmp_path / "v7.pt"), check=False)
    assert missing.returncode == 2 and "yolo@v1.0.0, yolo@v2.0.0" in missing.stderr


@pytest.mark.slow
def test_fresh_clone_dvc_pull_gives_byte_identical_data_and_weights(released, s3_server, tmp_path):
    clone = released.clone(tmp_path / "clone", s3_server.endpoint)
    released.run("dvc", "pull", cwd=clone.root)
    for out in OUTPUTS:
        original = tree_digest(released.project.root / out)
        assert original, out
        assert tree_digest(clone.root / out) == original, out
    assert sha256(clone.root / WEIGHTS) == released.weights["yolo@v2.0.0"]


@pytest.mark.slow
def test_release_refuses_a_dirty_workspace_and_says_what_to_do(own_released):
    project = own_released.project
    (project.root / "notes.txt").write_text("not committed\n")
    result = own_released.run("visapp", "release", check=False)
    assert result.returncode == 2
    assert "uncommitted changes (notes.txt)" in result.stderr
    assert "git add -A && git commit" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(version_tags(project.root)) == {"yolo@v1.0.0", "yolo@v2.0.0"}


@pytest.mark.slow
def test_release_refuses_a_stale_pipeline_and_says_what_to_do(own_released):
    project = own_released.project
    project.set_params("train.epochs=2")
    project.commit("more epochs, not trained")
    result = own_released.run("visapp", "release", check=False)
    assert result.returncode == 2
    assert "the pipeline is not up to date" in result.stderr
    assert "train (changed deps: params.yaml (train: modified))" in result.stderr
    assert "run `dvc repro`" in result.stderr
    assert set(version_tags(project.root)) == {"yolo@v1.0.0", "yolo@v2.0.0"}


@pytest.mark.slow
def test_release_refuses_a_commit_already_released(released):
    result = released.run("visapp", "release", check=False)
    assert result.returncode == 2
    assert "already released as yolo@v2.0.0" in result.stderr
    assert set(version_tags(released.project.root)) == {"yolo@v1.0.0", "yolo@v2.0.0"}


@pytest.mark.slow
def test_lineage_leads_from_a_version_back_to_its_data_params_metrics_and_run(released, s3_server, tmp_path):
    from mlflow.tracking import MlflowClient

    # From a fresh clone: everything comes from Git, the S3 remote and the tracking server, nothing local.
    clone = released.clone(tmp_path / "clone", s3_server.endpoint)
    info = json.loads(released.run("visapp", "lineage", "yolo@v1.0.0", "--json", cwd=clone.root).stdout)
    tag = "yolo@v1.0.0"
    commit = released.run("git", "rev-parse", f"{tag}^{{commit}}").stdout.strip()
    raw_dvc = released.run("git", "show", f"{commit}:data/raw.dvc").stdout
    metadata = released.metadata[tag]

    assert (info["tag"], info["version"], info["commit"], info["stages"]) == (tag, "v1.0.0", commit, ["prod"])
    assert info["data"]["fingerprint"] == metadata["fingerprint"]
    assert info["data"]["raw_dvc_hash"] == metadata["raw_dvc_hash"] == info["data"]["metadata_raw_dvc_hash"]
    assert f"md5: {info['data']['raw_dvc_hash']}" in raw_dvc
    assert info["metrics"] == released.metrics[tag]
    assert info["params"]["train.lr0"] == released.lr0[tag]
    assert info["params"]["train.epochs"] == 1
    assert info["weights"]["path"] == WEIGHTS and info["weights"]["stage"] == "train"
    weights_v1 = released.run("visapp", "model", "get", tag, "-o", str(tmp_path / "v1.pt"), cwd=clone.root)
    assert weights_v1.returncode == 0
    assert info["weights"]["md5"] == hashlib.md5((tmp_path / "v1.pt").read_bytes()).hexdigest()
    run = MlflowClient(released.tracking_uri).get_run(info["mlflow"]["run_id"])
    assert run.data.tags["model_version"] == tag
    assert run.data.tags["dataset_fingerprint"] == metadata["fingerprint"]
    assert run.data.tags["raw_dvc_hash"] == metadata["raw_dvc_hash"]
    assert float(run.data.params["train.lr0"]) == released.lr0[tag]
    assert run.data.metrics["mAP50"] == pytest.approx(released.metrics[tag]["mAP50"])

    text = released.run("visapp", "lineage", "yolo#prod", cwd=clone.root).stdout
    assert text.splitlines()[0] == "yolo@v1.0.0  (stages: prod)"
    for value in (commit, metadata["fingerprint"], metadata["raw_dvc_hash"], info["mlflow"]["run_id"]):
        assert value in text


@pytest.mark.slow
def test_release_push_to_an_unreachable_remote_refuses_before_tagging(own_released):
    from conftest import free_port

    project = own_released.project
    closed = f"http://127.0.0.1:{free_port()}"
    tags_before = own_released.run("git", "tag", "-l").stdout
    project.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", closed)
    result = own_released.run("visapp", "release", "--stage", "staging", "--push", check=False)
    assert result.returncode == 2
    assert f"cannot reach DVC remote 'storage' (s3://vis-registry/dvc via {closed})" in result.stderr
    assert f"is the S3 server at {closed} running?" in result.stderr
    assert own_released.run("git", "tag", "-l").stdout == tags_before


@pytest.mark.slow
def test_release_with_an_unreachable_tracking_server_refuses_before_tagging(own_released):
    from conftest import free_port

    tags_before = own_released.run("git", "tag", "-l").stdout
    closed = f"http://127.0.0.1:{free_port()}"
    result = own_released.project.run(
        "visapp", "release", "--stage", "staging", check=False, env={"MLFLOW_TRACKING_URI": closed}
    )
    assert result.returncode == 2
    assert f"cannot release: MLflow tracking server {closed} is not reachable" in result.stderr
    assert "MLFLOW_TRACKING_URI" in result.stderr
    assert own_released.run("git", "tag", "-l").stdout == tags_before


@pytest.mark.integration
def test_models_before_any_release_says_there_is_no_version_yet(make_project):
    project = make_project()
    proc = project.run("visapp", "models")
    assert "no model versions yet" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_a_release_worse_than_the_previous_one_is_flagged(tmp_path):
    from visapp.registry.release import _compare_with_previous

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "one")
    message = tag_message("yolo", "v1.0.0", {"mAP50-95": 0.5, "mAP50": 0.7}, {}, None)
    git("tag", "-a", "yolo@v1.0.0", "-m", message)
    note = _compare_with_previous(tmp_path, "yolo", "v2.0.0", {"mAP50-95": 0.4})
    assert note == (
        "warning: mAP50-95 0.4000 is below yolo@v1.0.0's 0.5000: this version is worse than the previous one on "
        "the headline metric (compare them with `visapp lineage`)"
    )
    assert _compare_with_previous(tmp_path, "yolo", "v2.0.0", {"mAP50-95": 0.6}) is None


@pytest.mark.slow
def test_release_refuses_a_commit_whose_conf_does_not_describe_its_model(own_released):
    project = own_released.project
    train = project.root / "conf" / "train" / "cpu_small.yaml"
    assert "\nepochs: 1\n" in train.read_text()
    train.write_text(train.read_text().replace("\nepochs: 1\n", "\nepochs: 2\n"))
    project.commit("conf says 2 epochs; params.yaml and the model say otherwise")
    result = own_released.run("visapp", "release", check=False)
    assert result.returncode == 2
    assert "params.yaml disagrees with conf/ (train.epochs: 1 in params.yaml, 2 from conf/)" in result.stderr
    assert "make params" in result.stderr and "visapp params sync" in result.stderr
    assert set(version_tags(project.root)) == {"yolo@v1.0.0", "yolo@v2.0.0"}


@pytest.mark.slow
def test_promoting_a_released_commit_pushes_the_version_tag_too(own_released, s3_server, tmp_path):
    from visapp.registry.release import _promotion_hint

    assert "it is in prod already" in _promotion_hint(own_released.project.root, "yolo", "yolo@v1.0.0")
    own_released.run("git", "push", "-q", "origin", ":refs/tags/yolo@v2.0.0")  # as if it was never pushed
    result = own_released.run("visapp", "release", "--stage", "staging", "--push")
    assert "already released: yolo@v2.0.0" in result.stdout
    assert "pushed yolo@v2.0.0, yolo#staging#" in result.stdout
    clone = own_released.clone(tmp_path / "clone", s3_server.endpoint)
    got = own_released.run("visapp", "model", "get", "yolo#staging", "-o", str(tmp_path / "s.pt"), cwd=clone.root)
    assert "wrote yolo#staging" in got.stdout
    assert sha256(tmp_path / "s.pt") == own_released.weights["yolo@v2.0.0"]

    # A clone that has the promotion tag but not the version tag says which tag to fetch.
    own_released.run("git", "tag", "-d", "yolo@v2.0.0", cwd=clone.root)
    missing = own_released.run("visapp", "model", "get", "yolo#staging", "-o", str(tmp_path / "x.pt"), cwd=clone.root,
                           check=False)  # fmt: skip
    assert missing.returncode == 2 and "git fetch" in missing.stderr
    models = own_released.run("visapp", "models", cwd=clone.root).stdout
    assert "promotion tags yolo#staging#" in models and "git fetch --tags" in models
