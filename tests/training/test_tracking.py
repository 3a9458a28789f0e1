"""visapp.training.tracking: URI resolution, the reachability check, names and tags; runs on a real MLflow server."""

from __future__ import annotations

import re

import pytest

from conftest import free_port, run
from visapp.config import TrackingConfig
from visapp.errors import VisError
from visapp.training import tracking
from visapp.training.results import metric_name

pytestmark = pytest.mark.unit


def test_uri_comes_from_env_then_params_then_local_sqlite():
    config = TrackingConfig(uri="http://params:5000", experiment="e", required=True)
    assert tracking.resolve_uri(config, {"MLFLOW_TRACKING_URI": "http://env:5000"}) == "http://env:5000"
    assert tracking.resolve_uri(config, {}) == "http://params:5000"
    assert tracking.resolve_uri(TrackingConfig(uri=None, experiment="e", required=True), {}) == "sqlite:///mlflow.db"


def test_closed_port_is_reported_with_the_uri_and_the_fixes():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VisError) as caught:
        tracking.check_reachable(uri)
    message = str(caught.value)
    assert uri in message
    assert "tracking.required=false" in message and "MLFLOW_TRACKING_URI" in message


def test_local_stores_need_no_server():
    tracking.check_reachable("sqlite:///mlflow.db")
    tracking.check_reachable("file:///tmp/mlruns")


def test_metric_names_are_ones_mlflow_accepts():
    assert metric_name("metrics/mAP50-95(B)") == "metrics/mAP50-95"
    assert metric_name("      train/box_loss") == "train/box_loss"  # old Ultralytics padded names
    assert metric_name("lr/pg0") == "lr/pg0"
    assert re.fullmatch(r"[/\w.\- :]*", metric_name("metrics/odd(name)[x]"))


@pytest.mark.integration
def test_run_tags_carry_the_lineage(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-ogee")
    code = tracking.source(tmp_path)
    tags = tracking.run_tags({"fingerprint": "f" * 64, "raw_dvc_hash": "abc.dir"}, "0123456789abcdef", code)
    assert tags[tracking.TAG_GIT_COMMIT] == "unknown" and tags[tracking.TAG_GIT_DIRTY] == "false"
    assert tags[tracking.TAG_DVC_EXP] == "brisk-ogee"
    assert tags[tracking.TAG_FINGERPRINT] == "f" * 64
    assert tags[tracking.TAG_RAW_DVC_HASH] == "abc.dir"
    assert tags[tracking.TAG_CHECKPOINT_KEY] == "0123456789abcdef"


@pytest.mark.integration
def test_reopening_a_run_id_continues_that_run(mlflow_server):
    from mlflow.tracking import MlflowClient

    tracking.check_reachable(mlflow_server.uri)
    first = tracking.open_run(mlflow_server.uri, "tracking-reopen", "r", {"a": "1"})
    first.log_params({"train.epochs": 3})
    first.log_metrics({"loss": 1.0}, step=1)
    # The process is killed here; the next attempt opens the stored run id again.
    again = tracking.open_run(mlflow_server.uri, "tracking-reopen", "r", {"a": "1"}, run_id=first.run_id)
    assert again.run_id == first.run_id
    assert again.log_params({"train.epochs": 3, "seed": 0}) == []  # same value again: fine; new key: logged
    assert again.log_params({"train.epochs": 4}) == ["train.epochs"]  # MLflow forbids a change: reported
    again.log_metrics({"loss": 0.5}, step=2)
    again.end()

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("tracking-reopen")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [first.run_id]
    assert runs[0].data.params == {"train.epochs": "3", "seed": "0"}
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [(1, 1.0), (2, 0.5)]
    assert runs[0].info.status == "FINISHED"


@pytest.mark.integration
def test_a_run_left_running_by_a_dead_training_is_ended_as_killed_and_no_other(mlflow_server):
    from mlflow.tracking import MlflowClient

    abandoned = tracking.open_run(mlflow_server.uri, "tracking-abandoned", "dead", {})  # its process was killed
    finished = tracking.open_run(mlflow_server.uri, "tracking-abandoned", "done", {})
    finished.end()
    failed = tracking.open_run(mlflow_server.uri, "tracking-abandoned", "failed", {})
    failed.end("FAILED")

    assert tracking.end_abandoned(mlflow_server.uri, abandoned.run_id)
    assert not tracking.end_abandoned(mlflow_server.uri, finished.run_id)
    assert not tracking.end_abandoned(mlflow_server.uri, failed.run_id)
    assert not tracking.end_abandoned(mlflow_server.uri, "0" * 32)  # gone from the server: nothing to end
    client = MlflowClient(mlflow_server.uri)
    statuses = [client.get_run(r.run_id).info.status for r in (abandoned, finished, failed)]
    assert statuses == ["KILLED", "FINISHED", "FAILED"]


@pytest.mark.integration
def test_a_run_is_named_after_the_code_it_trains(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    run(["git", "add", "a.txt"], tmp_path)
    run(["git", "commit", "-q", "-m", "first"], tmp_path)
    head = run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    clean = tracking.source(tmp_path)
    assert (clean.commit, clean.branch, clean.dirty) == (head, "main", False)
    assert tracking.run_name(clean, "0123456789abcdef", {}) == f"main@{head[:7]}"
    (tmp_path / "a.txt").write_text("two\n")
    dirty = tracking.source(tmp_path)
    assert dirty.dirty and "+two" in dirty.diff
    assert tracking.run_name(dirty, "0123456789abcdef", {}) == f"main@{head[:7]}+changes"
    assert tracking.run_name(dirty, "k", {"DVC_EXP_NAME": "brisk-ogee"}) == "brisk-ogee"
    tags = tracking.run_tags({}, "k", dirty, {})
    assert tags[tracking.TAG_GIT_DIRTY] == "true" and tracking.TAG_DVC_EXP not in tags
