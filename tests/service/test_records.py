"""The service's pieces that need nothing but Python: the job record's state machine, the params of a job composed
once, the queue's URL, and the words a training's error is told in."""

from __future__ import annotations

from pathlib import Path

import pytest

from visapp.config import ConfigError, OnError
from visapp.errors import VisError
from visapp.service import records
from visapp.service.params import TrainOverrides, dataset_params, training_params, with_classes, with_paths
from visapp.service.queue import make_huey
from visapp.service.records import Conflict, State
from visapp.service.settings import ServiceSettings
from visapp.service.trainer import scrub

pytestmark = pytest.mark.unit


def record() -> records.JobRecord:
    upload = records.Upload(filename="ds.zip", bytes=10, stored_as="upload.zip")
    code = records.CodeVersion(package="0", commit=None)
    return records.new_record("a" * 22, "owner", upload, {"data": {}}, code, OnError.fail, None)


def test_a_record_moves_only_along_the_state_machine_and_keeps_every_entry():
    job = record().move(State.validating).move(State.ready)
    with pytest.raises(Conflict, match="ready; it cannot become running"):
        job.move(State.running)
    for _ in range(2):
        job.move(State.queued).move(State.running).move(State.succeeded)
    assert [t.state for t in job.transitions].count(State.succeeded) == 2
    assert job.history["succeeded"] == job.transitions[-1].at  # the last time, not the first
    with pytest.raises(ValueError, match="bogus"):
        records.parse({**job.model_dump(mode="json"), "bogus": 1})  # a typo is an error, not a new field


def test_the_params_of_an_upload_and_of_a_training_are_composed_and_checked_at_the_request():
    raw = dataset_params(["a", "b"], OnError.skip)
    assert raw["data"]["classes"] == ["a", "b"] and raw["data"]["on_error"] == "skip"
    with pytest.raises(ConfigError, match="more than once"):
        dataset_params(["a", "a"], OnError.fail)
    assert dataset_params(None, OnError.fail)["data"]["classes"] == []  # filled from the annotations later
    with pytest.raises(ConfigError, match=r"data\.classes is empty"):
        with_classes(dataset_params(None, OnError.fail), [])

    trained = training_params(raw, {"epochs": 3, "extra": {"mixup": 0.1}})
    assert trained["train"]["epochs"] == 3
    assert trained["train"]["extra"] == {**raw["train"]["extra"], "mixup": 0.1}  # merged key by key
    assert raw["train"]["epochs"] != 3  # the dataset's params are left as they were
    for bad, words in [({"extra": {"bogus_arg": 1}}, "no argument 'bogus_arg'"),
                       ({"extra": {"mosiac": 1.0}}, "did you mean 'mosaic'"),
                       ({"extra": {"cos_lr": True}}, "which visapp sets itself"),
                       ({"extra": {"mixup": 3.0}}, "between 0 and 1"),
                       ({"batch": 0}, "batch")]:  # fmt: skip
        with pytest.raises(VisError, match=words):
            training_params(raw, bad)
    located = with_paths(trained, Path("/scratch/job"))
    assert located.paths.raw == "/scratch/job/raw" and located.train.epochs == 3


def test_the_override_schema_is_train_config_with_its_types_and_ranges():
    fields = TrainOverrides.model_json_schema()["properties"]
    assert {"epochs", "imgsz", "cos_lr", "extra"} <= set(fields)
    assert TrainOverrides(epochs=5).model_dump(exclude_none=True) == {"epochs": 5}
    for bad in ({"epochs": 0}, {"epoch": 5}, {"lr0": 0}, {"cos_lr": "maybe"}):
        with pytest.raises(ValueError):
            TrainOverrides(**bad)


def test_a_sqlite_queue_url_names_an_absolute_path(tmp_path):
    settings = ServiceSettings.from_env({"VISAPP_QUEUE_URL": f"sqlite://{tmp_path}/q/queue.db"}, cwd=tmp_path)
    huey = make_huey(settings)
    assert Path(huey.storage.filename) == tmp_path / "q" / "queue.db"  # not relative to the working folder


def test_a_training_s_error_names_no_path_of_the_server():
    scratch = Path("/srv/work/job/attempt-1")
    text = "cannot read /srv/work/job/attempt-1/data/x.yaml (see /opt/venv/lib/python3.11/site.py)"
    assert scrub(text, scratch) == "cannot read data/x.yaml (see site.py)"


def test_the_docs_table_of_settings_is_the_declaration():
    from conftest import REPO_ROOT
    from visapp.service.settings import documented

    text = (REPO_ROOT / "docs" / "service.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `VISAPP_")]
    assert rows == [f"| `{env}` | {shown} | {meaning} |" for env, shown, meaning in documented()]
