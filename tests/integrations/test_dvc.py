"""visapp.integrations.dvc_env: the repository a stage works for, also from a queued experiment's copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from visapp.integrations.dvc_env import repository_root

pytestmark = pytest.mark.unit


def test_repository_root_is_the_repository_also_from_a_queued_experiment_copy(tmp_path):
    assert repository_root(tmp_path) == Path()
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert repository_root(copy) == tmp_path.resolve() / "repo"


def test_the_validate_store_and_the_checkpoints_live_in_the_repository_by_one_rule(tmp_path, monkeypatch):
    """DVC_ROOT is read in one place: validation's reuse store and training's checkpoints follow it alike."""
    from visapp.dataset.reuse_store import default_folder
    from visapp.training.checkpoints import checkpoint_base

    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    for environ in ({}, {"DVC_ROOT": str(tmp_path / "repo")}):  # a queued experiment's copy, with DVC_ROOT or not
        monkeypatch.delenv("DVC_ROOT", raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        assert default_folder().resolve() == tmp_path.resolve() / "repo" / ".cache" / "validate"
        assert checkpoint_base().resolve() == tmp_path.resolve() / "repo" / ".cache" / "train"
    assert default_folder({"VISAPP_VALIDATE_CACHE": str(tmp_path / "elsewhere")}) == tmp_path / "elsewhere"
