"""A released version stays readable forever: v1 is released, then the params schema gains a key, a default
changes and a config group is renamed; v2 is trained and released with that code. `visapp lineage`, `visapp
models` and `visapp model get` work for both, with the code of v2.

The project runs its own copy of the library (`PYTHONPATH=<project>/src`), so the schema change is real: the
stages and the CLI of v2 load params through the changed dataclasses.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import Project
from factory import TINY_TRAIN

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compose(project: Project, env: dict[str, str]) -> None:
    """`make params`: recompose params.yaml from conf/ with the project's own library."""
    code = "from visapp.composition import compose_params_yaml; open('params.yaml', 'w').write(compose_params_yaml())"
    project.run("python", "-c", code, env=env)


def test_old_versions_stay_readable_after_the_schema_grows(make_project, mlflow_server, tmp_path):
    project = make_project()
    env = {"PYTHONPATH": str(project.root / "src"), "MLFLOW_TRACKING_URI": mlflow_server.uri}
    (project.root / "conf" / "train" / "cpu_small.yaml").write_text(TINY_TRAIN)
    compose(project, env)
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16", env=env)
    project.run("dvc", "add", "-q", "data/raw", env=env)
    project.commit("tiny training on the sample")
    project.run("dvc", "repro", env=env)
    project.commit("trained v1")
    project.run("visapp", "release", env=env)
    weights = {"yolo@v1.0.0": sha256(project.root / "models/yolo/weights/best.pt")}

    # The schema gains a key, a default changes, and the `model` group's option is renamed.
    config = project.root / "src" / "visapp" / "config.py"
    text = config.read_text()
    assert "    cos_lr: bool" in text
    config.write_text(text.replace("    cos_lr: bool", "    dropout: float\n    cos_lr: bool"))
    (project.root / "conf" / "train" / "cpu_small.yaml").write_text(
        TINY_TRAIN.replace("lr0: 0.002", "lr0: 0.004") + "dropout: 0.0\n"
    )
    (project.root / "conf" / "model" / "yolov8n.yaml").rename(project.root / "conf" / "model" / "nano.yaml")
    conf = project.root / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("model: yolov8n", "model: nano"))
    compose(project, env)
    params = (project.root / "params.yaml").read_text()
    assert "dropout: 0.0" in params and "lr0: 0.004" in params
    project.commit("params schema v2: dropout, lr0 0.004, model group nano")
    project.run("dvc", "repro", env=env)
    project.commit("trained v2")
    project.run("visapp", "release", env=env)
    weights["yolo@v2.0.0"] = sha256(project.root / "models/yolo/weights/best.pt")
    assert weights["yolo@v1.0.0"] != weights["yolo@v2.0.0"]

    # Old params.yaml through today's strict schema fails: what the registry must never do.
    old = project.run("git", "show", "yolo@v1.0.0:params.yaml").stdout
    probe = "import sys, yaml; from visapp.config import to_params; to_params(yaml.safe_load(sys.stdin.read()))"
    strict = project.run("python", "-c", probe, check=False, env=env, input=old)
    assert strict.returncode != 0 and "train.dropout is missing" in strict.stderr

    models = json.loads(project.run("visapp", "models", "--json", env=env).stdout)
    assert [row["tag"] for row in models] == ["yolo@v2.0.0", "yolo@v1.0.0"]
    for tag, lr0 in (("yolo@v1.0.0", 0.002), ("yolo@v2.0.0", 0.004)):
        info = json.loads(project.run("visapp", "lineage", tag, "--json", env=env).stdout)
        assert info["tag"] == tag and info["params"]["train.lr0"] == lr0
        assert ("train.dropout" in info["params"]) == (tag == "yolo@v2.0.0")  # history as it was
        assert info["mlflow"]["run_id"]
        out = tmp_path / f"{tag}.pt"
        project.run("visapp", "model", "get", tag, "-o", str(out), env=env)
        assert sha256(out) == weights[tag]
    assert os.environ.get("PYTHONPATH", "") != env["PYTHONPATH"]  # the copy ran only where told to
