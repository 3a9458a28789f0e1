"""The training subprocess's snapshots: what a job's stored checkpoint holds."""

from __future__ import annotations

import pytest

from visapp.dataset.views import VIEW_MARKER
from visapp.service.trainer import CHECKPOINTS, SNAPSHOTS, snapshot

pytestmark = pytest.mark.unit


def test_a_snapshot_holds_the_checkpoint_but_neither_the_dataset_view_nor_what_a_link_points_to(tmp_path):
    images = tmp_path / "dataset" / "JPEGImages"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"image bytes")
    key = tmp_path / "scratch" / CHECKPOINTS / "0123abcd"
    (key / "run" / "weights").mkdir(parents=True)
    (key / "run" / "weights" / "last.pt").write_bytes(b"weights")
    (key / "state.json").write_text("{}")
    view = key / "data"  # as the train stage builds it: folder links into the dataset
    (view / "train" / "folders" / "0").mkdir(parents=True)
    (view / VIEW_MARKER).write_text("a view\n")
    (view / "train" / "folders" / "0" / "images").symlink_to(images, target_is_directory=True)
    (key / "run" / "linked").symlink_to(images, target_is_directory=True)

    name = snapshot(tmp_path / "scratch", 3)

    copied = tmp_path / "scratch" / SNAPSHOTS / name / "0123abcd"
    assert name == "000003"
    assert (copied / "run" / "weights" / "last.pt").read_bytes() == b"weights"
    assert (copied / "state.json").read_text() == "{}"
    assert not (copied / "data").exists()
    assert (copied / "run" / "linked").is_symlink()  # copied as a link: no image is copied
    assert not list((tmp_path / "scratch" / SNAPSHOTS).glob("*.partial"))


def test_a_trainer_knows_when_its_worker_is_gone():
    """Once the worker that started it is gone, the trainer writes nothing more into the scratch being swept."""
    import os

    from visapp.service.trainer import orphaned

    assert not orphaned(os.getppid())
    assert orphaned(os.getppid() + 1_000_000)
