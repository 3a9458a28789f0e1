"""The committed dvc.lock matches the committed code and params: a fresh clone's `dvc status` names no changed
dependency or param (only the data it has not pulled yet)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from conftest import REPO_ROOT
from visapp.config import flatten

pytestmark = pytest.mark.unit


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dir_md5(folder) -> str:
    """DVC's hash of a folder: the md5 of its sorted listing of (relative path, md5) as JSON, then `.dir`."""
    listing = [
        {"md5": md5(path.read_bytes()), "relpath": path.relative_to(folder).as_posix()}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    return md5(json.dumps(sorted(listing, key=lambda e: e["relpath"]), sort_keys=True).encode()) + ".dir"


def locked_deps():
    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())
    for stage, entry in lock["stages"].items():
        for dep in entry.get("deps", []):
            if dep["path"].startswith(("src/", "stages/", "conf")):
                yield stage, dep


@pytest.mark.parametrize(("stage", "dep"), list(locked_deps()), ids=lambda value: getattr(value, "get", str)("path"))
def test_the_lock_records_the_code_and_conf_as_committed(stage, dep):
    path = REPO_ROOT / dep["path"]
    found = dir_md5(path) if path.is_dir() else md5(path.read_bytes())
    assert dep["md5"] == found, f"{stage}: {dep['path']} changed since dvc.lock was written: run `make demo`"


def test_the_lock_records_the_params_as_committed():
    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())
    params = flatten(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    for stage, entry in lock["stages"].items():
        for key, value in flatten(entry.get("params", {}).get("params.yaml", {})).items():
            assert params.get(key) == value, f"{stage}: {key} is {params.get(key)!r}, the lock says {value!r}"


def test_every_stage_of_dvc_yaml_is_in_the_lock():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())["stages"]) == set(stages)
