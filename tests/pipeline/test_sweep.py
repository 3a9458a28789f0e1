"""A queued 2x2 grid sweep through DVC's Hydra composition: four experiments in `dvc exp show`, four MLflow runs."""

from __future__ import annotations

import itertools
import json
import time

import pytest

pytestmark = pytest.mark.integration

LR0 = (0.01, 0.001)
IMGSZ = (64, 96)
# Fixed overrides keep each training to seconds. `dvc exp run` recomposes params.yaml from conf/, so they go
# through -S like the grid (an edit of params.yaml would be overwritten).
TINY = ["train.epochs=1", "train.batch=4", "train.workers=0", "train.device=cpu", "tracking.experiment=vis-sweep"]
QUEUE_TIMEOUT_S = 900


def _experiments(show: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json` -> {experiment name: its data} for the experiments of the baseline commit."""
    found = {}
    for baseline in show:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found[experiment["name"]] = rev["data"]
    return found


def _wait_for_queue(project, env: dict[str, str]) -> str:
    """Poll `dvc queue status` until nothing is queued or running; the final status table."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        status = project.run("dvc", "queue", "status", env=env).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}")
        time.sleep(3)


def _failed_logs(project, status: str, env: dict[str, str]) -> str:
    names = [line.split()[1] for line in status.splitlines() if "Failed" in line]
    return "\n".join(project.run("dvc", "queue", "logs", name, check=False, env=env).stdout[-3000:] for name in names)


@pytest.mark.slow
def test_queued_grid_sweep_gives_four_experiments_each_leading_to_its_mlflow_run(make_project, mlflow_server):
    """A 2x2 grid, one point of which was trained before: DVC restores that point from its run cache (no training,
    so no new MLflow run), and its mlflow_run.json leads to the run that produced the model."""
    import dvc.api
    from mlflow.tracking import MlflowClient

    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    project.run("dvc", "add", "-q", "data/raw")
    with (project.root / "conf" / "train" / "cpu_small.yaml").open("a") as conf:
        conf.write("  plots: false  # Ultralytics' plots are most of a tiny training's time\n")  # under `extra:`
    project.run("visapp", "params", "compose")
    project.commit("sample data")
    # The data stages once, committed: each queued experiment then only trains (it runs in a copy under
    # .dvc/tmp/exps, built from the commit and the DVC cache).
    project.run("dvc", "repro", "metadata")
    project.commit("data stages")

    overrides = [arg for item in TINY for arg in ("-S", item)]
    project.run(
        "dvc", "exp", "run", "-n", "earlier", "-S", "train.lr0=0.01", "-S", "train.imgsz=64", *overrides, env=env
    )
    project.run("git", "checkout", "-q", "--", ".")
    queued = project.run(
        "dvc", "exp", "run", "--queue", "-S", "train.lr0=0.01,0.001", "-S", "train.imgsz=64,96", *overrides, env=env
    )
    assert queued.stdout.count("Queued experiment") == 4
    try:
        project.run("dvc", "queue", "start", "-j", "2", env=env)  # the worker inherits MLFLOW_TRACKING_URI
        status = _wait_for_queue(project, env)
    finally:
        project.run("dvc", "queue", "stop", check=False, env=env)
    assert status.count("Success") == 4, f"{status}\n{_failed_logs(project, status, env)}"

    experiments = _experiments(json.loads(project.run("dvc", "exp", "show", "--json", env=env).stdout))
    grid = {}
    for name, data in experiments.items():
        params = data["params"]["params.yaml"]["data"]
        metrics = data["metrics"]["models/yolo/metrics.json"]["data"]
        assert params["train"]["epochs"] == 1 and metrics["epochs"] == 1
        assert {"precision", "recall", "mAP50", "mAP50-95", "fitness", "epochs", "train_seconds"} <= set(metrics)
        grid[name] = (params["train"]["lr0"], params["train"]["imgsz"])
    assert sorted(point for name, point in grid.items() if name != "earlier") == sorted(itertools.product(LR0, IMGSZ))

    client = MlflowClient(mlflow_server.uri)
    runs = {
        run.info.run_id: run for run in client.search_runs([client.get_experiment_by_name("vis-sweep").experiment_id])
    }
    assert len(runs) == 4  # "earlier" and three trained points; the fourth point was restored, not trained
    revs = {name: rev for name, rev in _revisions(project, env).items() if name in grid}
    linked = {}
    for name, rev in revs.items():
        record = json.loads(dvc.api.read("models/yolo/mlflow_run.json", repo=str(project.root), rev=rev))
        run = runs[record["run_id"]]  # every model leads to an MLflow run of this tracking server
        lr0, imgsz = grid[name]
        assert (float(run.data.params["train.lr0"]), int(run.data.params["train.imgsz"])) == (lr0, imgsz)
        assert run.info.status == "FINISHED"
        linked[name] = run.info.run_name
    restored = [name for name, run_name in linked.items() if run_name != name]
    assert restored == [n for n in linked if n != "earlier" and grid[n] == grid["earlier"]], linked
    assert linked[restored[0]] == "earlier"


def _revisions(project, env: dict[str, str]) -> dict[str, str]:
    """{experiment name: its commit} from `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(project.run("dvc", "exp", "show", "--json", env=env).stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found[experiment["name"]] = rev["rev"]
    return found
