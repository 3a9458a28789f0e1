"""The registry's face of the API: two released versions, listed by `GET /models` and downloaded byte-identical
through `GET /models/{version}/download`, from a fresh clone whose only copy of the weights is the S3 remote.

The versions are made the way a user makes them (`dvc repro`, commit, `visapp release --push` to a moto S3 remote,
GTO tags), from a project whose pipeline is one stand-in train stage: it writes weights (distinct bytes per
version), metrics.json and the dataset metadata a release records, in milliseconds. The registry does not look
at how the weights were made, and tests/registry/ covers releases of real trainings; this keeps the test at
seconds rather than two trainings.
"""

from __future__ import annotations

import hashlib
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from conftest import VENV_BIN, Project, free_port
from service.conftest import OTHER_TOKEN, TOKEN, client, signed_in

pytestmark = pytest.mark.integration

WEIGHTS = "models/yolo/weights/best.pt"
PIPELINE = """\
stages:
  train:
    cmd: python train_stand_in.py
    deps:
      - train_stand_in.py
      - seed.txt
    outs:
      - models/yolo/weights
      - data/metadata
    metrics:
      - models/yolo/metrics.json:
          cache: false
artifacts:
  yolo:
    path: models/yolo/weights/best.pt
    type: model
"""
STAND_IN = """\
import hashlib, json, pathlib, random

seed = pathlib.Path("seed.txt").read_text().strip()
weights = pathlib.Path("models/yolo/weights")
weights.mkdir(parents=True, exist_ok=True)
(weights / "best.pt").write_bytes(random.Random(seed).randbytes(300_000))
metrics = {"mAP50": 0.5, "mAP50-95": 0.25, "precision": 0.5, "recall": 0.5, "epochs": 1}
pathlib.Path("models/yolo/metrics.json").write_text(json.dumps(metrics))
metadata = pathlib.Path("data/metadata")
metadata.mkdir(parents=True, exist_ok=True)
fingerprint = hashlib.sha256(seed.encode()).hexdigest()
(metadata / "dataset_metadata.json").write_text(json.dumps({"fingerprint": fingerprint}))
"""


def train_and_release(project: Project, seed: str, *release_args: str) -> tuple[str, bytes]:
    (project.root / "seed.txt").write_text(seed)
    project.commit(f"data {seed}")
    project.run("dvc", "repro")
    project.commit(f"trained on {seed}")
    released = project.run("visapp", "release", "--push", *release_args)
    return released.stdout.split()[1], (project.root / WEIGHTS).read_bytes()  # "released yolo@vN.0.0 on ..."


@pytest.fixture
def released(make_project, s3_server, tmp_path):
    """Two versions released to S3 (v1 promoted to prod), and a fresh clone of the project to serve them from."""
    project = make_project()
    (project.root / "dvc.yaml").write_text(PIPELINE)
    (project.root / "train_stand_in.py").write_text(STAND_IN)
    s3_server.attach(project, bucket="vis-models-api")
    weights = dict([train_and_release(project, "one", "--stage", "prod"), train_and_release(project, "two")])
    assert set(weights) == {"yolo@v1.0.0", "yolo@v2.0.0"} and weights["yolo@v1.0.0"] != weights["yolo@v2.0.0"]

    clone = tmp_path / "clone"
    project.run("git", "clone", "-q", str(project.root), str(clone))
    Project(clone).run("dvc", "remote", "modify", "--local", "storage", "endpointurl", s3_server.endpoint)
    assert not any(path.is_file() for path in (clone / ".dvc" / "cache").rglob("*")) and not (clone / WEIGHTS).exists()
    return clone, weights


def test_released_versions_are_listed_and_downloaded_byte_identical(make_service, released):
    clone, weights = released
    service = make_service()
    service.cwd = clone
    api_proc = service.api(worker=False)
    with client(api_proc.url) as api, client(api_proc.url, OTHER_TOKEN) as other:
        listed = api.get("/models")
        assert listed.status_code == 200, listed.text
        rows = listed.json()
        assert [row["tag"] for row in rows] == ["yolo@v2.0.0", "yolo@v1.0.0"]  # newest first
        assert [row["version"] for row in rows] == ["v2.0.0", "v1.0.0"]
        assert [row["stages"] for row in rows] == [[], ["prod"]]
        assert rows[1]["message"].startswith("yolo v1.0.0: mAP50 0.5000")
        assert other.get("/models").json() == rows  # the registry is the repository's, not a token's

        for ref, tag in [
            ("v1.0.0", "yolo@v1.0.0"),
            ("yolo@v2.0.0", "yolo@v2.0.0"),
            ("v2.0.0", "yolo@v2.0.0"),
            ("yolo#prod", "yolo@v1.0.0"),  # the version in a stage
            ("yolo", "yolo@v2.0.0"),  # the latest
        ]:
            got = api.get(f"/models/{urllib.parse.quote(ref, safe='@')}/download")
            assert got.status_code == 200, (ref, got.text)
            assert got.headers["content-type"] == "application/octet-stream"
            assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(weights[tag]).hexdigest(), ref
            assert got.headers["content-disposition"] == f'attachment; filename="{ref.replace("@", "-")}-best.pt"'

        for ref in ["v9.0.0", "yolo@v3.0.0", "yolo%23staging", "other@v1.0.0", "not a version", "v1"]:
            missing = api.get(f"/models/{urllib.parse.quote(ref, safe='%@')}/download")
            assert missing.status_code == 404, (ref, missing.text)
            assert missing.json()["error"]["code"] == "unknown_version"
        assert api.get("/models/v1.0.0/download", headers={"Authorization": "Bearer nope"}).status_code == 401

    with signed_in(api_proc.url) as pages:  # the models page: the same versions, stages and metrics, the same bytes
        page = pages.get("/ui/models").text
        assert page.index("yolo@v2.0.0") < page.index("yolo@v1.0.0") and ">prod<" in page and "0.500" in page
        assert "format=onnx" not in page  # neither was exported
        got = pages.get("/ui/models/yolo@v1.0.0/download")
        assert got.status_code == 200 and got.content == weights["yolo@v1.0.0"]

    # Nothing was written into the clone, and every download's temporary folder is gone.
    assert not (clone / WEIGHTS).exists()
    assert Project(clone).run("git", "status", "--porcelain").stdout == ""
    assert not list(Path(service.base).glob("visapp-model-*")), list(Path(service.base).iterdir())
    assert TOKEN not in api_proc.output()


def test_the_promoted_version_is_fetched_at_start_reported_and_served_as_prod(make_service, released):
    """A promotion rolls the service out with VISAPP_MODEL_VERSION: it fetches that version's weights from the
    remote when it starts, says which version it serves in /health (what the rollout compares), and serves them at
    /models/prod/download. A version it cannot fetch stops the start, naming it: the rollout then rolls back."""
    clone, weights = released
    service = make_service(VISAPP_MODEL_VERSION="yolo@v1.0.0")
    service.cwd = clone
    api_proc = service.api(worker=False)
    with client(api_proc.url) as api:
        served = api.get("/health").json()["model"]
        assert served["version"] == "yolo@v1.0.0"
        assert served["sha256"] == hashlib.sha256(weights["yolo@v1.0.0"]).hexdigest()
        assert api.get("/models/prod/download").content == weights["yolo@v1.0.0"]
    assert Project(clone).run("git", "status", "--porcelain").stdout == ""

    env = {**api_proc.env, "VISAPP_MODEL_VERSION": "yolo@v9.0.0", "VISAPP_WORK_DIR": str(service.base / "w2")}
    refused = subprocess.run([str(VENV_BIN / "visapp"), "serve", "--port", str(free_port())], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0 and "VISAPP_MODEL_VERSION=yolo@v9.0.0" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr


def test_without_a_promoted_version_health_says_no_model_is_served(make_service):
    api_proc = make_service().api(worker=False)
    with client(api_proc.url, token=None) as anyone:
        assert anyone.get("/health").json()["model"] is None
