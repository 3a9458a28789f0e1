"""The S3 remote: push and pull against moto's S3 server on loopback, and clear failures when it is down."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Project, tree_digest
from visapp.errors import VisError
from visapp.integrations.dvc import RemoteSettings as RemoteInfo
from visapp.registry.remote import check_remote, explain, push, remote_info

pytestmark = pytest.mark.integration


def write_raw(root: Path, files: int = 6, seed: int = 0) -> None:
    """A stand-in dataset: a few binary files of distinct bytes in nested folders."""
    for i in range(files):
        path = root / "data" / "raw" / ("JPEGImages" if i % 2 else "Annotations") / f"{seed}_{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest() * (100 + i))


def clone(project: Project, dest: Path, endpoint: str) -> Project:
    """A fresh clone, pointed at the same S3 endpoint the way a user would (.dvc/config.local)."""
    project.run("git", "clone", "-q", str(project.root), str(dest))
    copy = Project(dest)
    copy.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint)
    return copy


def test_repository_names_an_s3_default_remote_without_credentials():
    from dvc.config import Config

    config = Config.load_file(str(REPO_ROOT / ".dvc" / "config"))
    assert config["core"]["remote"] == "storage"
    section = config["remote"]["storage"]
    assert section["url"].startswith("s3://")
    assert not {"access_key_id", "secret_access_key", "session_token", "endpointurl"} & set(section)


def test_explain_names_the_fix_for_each_kind_of_failure():
    remote = RemoteInfo("storage", "s3://b/p", "http://127.0.0.1:9")

    class EndpointConnectionError(Exception):
        pass

    class NoCredentialsError(Exception):
        pass

    assert "is the S3 server at http://127.0.0.1:9 running" in explain(EndpointConnectionError("refused"), remote)
    assert "AWS_PROFILE" in explain(NoCredentialsError("Unable to locate credentials"), remote)
    assert "does not exist" in explain(Exception("An error occurred (NoSuchBucket)"), remote)
    assert "s3://b/p" in explain(Exception("odd"), remote)


@pytest.mark.integration
def test_remote_info_without_a_remote_says_how_to_add_one(make_project):
    project = make_project()
    with pytest.raises(VisError, match="dvc remote add -d storage s3://"):
        remote_info(project.root)


@pytest.mark.integration
def test_push_then_pull_in_a_fresh_clone_is_byte_identical(make_project, s3_server, tmp_path):
    project = make_project()
    write_raw(project.root)
    project.run("dvc", "add", "-q", "data/raw")
    url = s3_server.attach(project, bucket="vis-roundtrip")
    project.commit("data + remote")
    assert remote_info(project.root) == RemoteInfo("storage", url, s3_server.endpoint)
    assert check_remote(project.root).url == url

    pushed = project.run("dvc", "push", "data/raw.dvc")
    assert "7 files pushed" in pushed.stdout  # six files + the directory listing

    copy = clone(project, tmp_path / "clone", s3_server.endpoint)
    assert not (copy.root / "data" / "raw").exists()
    copy.run("dvc", "pull", "data/raw.dvc")  # the pipeline has not run here: only the raw data exists
    original, restored = tree_digest(project.root / "data"), tree_digest(copy.root / "data")
    assert restored == original and len(original) == 8  # six files, raw.dvc, .gitignore
    assert copy.run("dvc", "status", "data/raw.dvc").stdout.strip().endswith("up to date.")


@pytest.mark.integration
def test_push_and_pull_with_the_server_stopped_fail_clearly_and_change_nothing(make_project, own_s3_server, tmp_path):
    project = make_project()
    write_raw(project.root)
    project.run("dvc", "add", "-q", "data/raw")
    own_s3_server.attach(project, bucket="vis-stopped")
    project.commit("data + remote")
    project.run("dvc", "push")
    copy = clone(project, tmp_path / "clone", own_s3_server.endpoint)
    write_raw(project.root, files=3, seed=1)  # new data, in the cache only: something left to push
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("more data")

    own_s3_server.stop()

    before = tree_digest(project.root)
    result = project.run("dvc", "push", check=False)
    assert result.returncode != 0
    assert f'Could not connect to the endpoint URL: "{own_s3_server.endpoint}/' in result.stderr
    assert tree_digest(project.root) == before

    before = tree_digest(copy.root)
    result = copy.run("dvc", "pull", "data/raw.dvc", check=False)
    assert result.returncode != 0
    assert "failed to pull data from the cloud" in result.stderr
    assert f'Could not connect to the endpoint URL: "{own_s3_server.endpoint}/' in result.stderr
    assert tree_digest(copy.root) == before
    assert not (copy.root / "data" / "raw").exists()

    # visapp's own push (used by `visapp release --push`) says what to check, and changes nothing either.
    before = tree_digest(project.root)
    with pytest.raises(VisError, match=f"is the S3 server at {own_s3_server.endpoint} running"):
        push(project.root)
    with pytest.raises(VisError, match="cannot reach DVC remote 'storage'"):
        check_remote(copy.root)
    assert tree_digest(project.root) == before
