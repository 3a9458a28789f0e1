"""visapp.integrations.dvc: the repository a stage works for, also from a queued experiment's copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from visapp.integrations.dvc import repository_root

pytestmark = pytest.mark.unit


def test_repository_root_is_the_repository_also_from_a_queued_experiment_copy(tmp_path):
    assert repository_root(tmp_path) == Path()
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert repository_root(copy) == tmp_path.resolve() / "repo"
