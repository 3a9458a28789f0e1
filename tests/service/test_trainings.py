"""Trainings of one job, through the real server and its consumer: a retrain keeps the earlier model, each attempt
keeps its own, a cancelled run ends KILLED in MLflow and a failed one FAILED with words a client can act on, the
job's lineage names the dataset, the params, the code and the run, and a training says what it does before its
first epoch."""

from __future__ import annotations

import io
import subprocess
import zipfile

import psutil
import pytest

from conftest import REPO_ROOT
from service.conftest import TINY_TRAINING, client, upload, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = {"succeeded", "failed", "cancelled"}


def test_retrains_keep_every_attempt_s_model_and_lineage_and_end_their_mlflow_runs(
    make_service, dataset_zip, mlflow_server
):
    import mlflow

    tracking = mlflow.MlflowClient(mlflow_server.uri)
    api_proc = make_service().api()  # its own consumer trains
    with client(api_proc.url) as api:
        answer = upload(api, dataset_zip)
        job_id, metadata = answer.json()["job_id"], answer.json()["metadata"]
        assert api.post(f"/train-async/{job_id}", json=TINY_TRAINING).status_code == 202
        first = wait_for(api, job_id, FINAL)
        assert first["state"] == "succeeded", f"{first}\n{api_proc.output()}"
        weights = api.get(f"/download/model/{job_id}").content

        # A second, long training: while it runs (and before its first epoch ends) the job says what it does, and
        # the first training's model is still the job's model.
        assert api.post(f"/train-async/{job_id}", json={**TINY_TRAINING, "epochs": 50}).status_code == 202
        running = wait_for(api, job_id, {"running"}, 120)
        assert running["progress"]["phase"], running
        assert api.get(f"/download/model/{job_id}").content == weights
        wait_until(lambda: ((api.get(f"/jobs/{job_id}").json()["progress"] or {}).get("epoch") or 0) >= 1, 300,
                   "the first epoch of the second training")  # fmt: skip
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 202
        cancelled = wait_for(api, job_id, FINAL, 120)
        assert cancelled["state"] == "cancelled", cancelled

        # Each attempt keeps its own weights; the job's model is the newest that succeeded.
        assert api.get(f"/download/model/{job_id}").content == weights
        assert api.get(f"/download/model/{job_id}", params={"attempt": 1}).content == weights
        partial = api.get(f"/download/model/{job_id}", params={"attempt": 2})
        assert partial.status_code == 200 and zipfile.is_zipfile(io.BytesIO(partial.content))
        assert partial.content != weights
        assert api.get(f"/download/model/{job_id}", params={"attempt": 3}).status_code == 404

        # A training that fails ends FAILED, with an error that names no server path and holds no traceback.
        assert api.post(f"/train-async/{job_id}", json={**TINY_TRAINING, "device": "cuda:7"}).status_code == 202
        failed = wait_for(api, job_id, FINAL, 300)
        assert failed["state"] == "failed" and failed["error"], failed
        assert "Traceback" not in failed["error"] and str(api_proc.env["VISAPP_WORK_DIR"]) not in failed["error"]
        assert not any(part.startswith("/") and part.count("/") > 1 for part in failed["error"].split()), failed
        assert api.get(f"/download/model/{job_id}").content == weights

        # A training that dies on its own (its process killed) ends FAILED in MLflow too, by its worker.
        assert api.post(f"/train-async/{job_id}", json={**TINY_TRAINING, "epochs": 50}).status_code == 202
        wait_until(lambda: ((api.get(f"/jobs/{job_id}").json()["progress"] or {}).get("epoch") or 0) >= 1, 300,
                   "the first epoch of the fourth training")  # fmt: skip
        work = api_proc.env["VISAPP_WORK_DIR"]  # this service's trainer, not another test's
        (trainer,) = [p for p in psutil.process_iter(["cmdline"])
                      if "visapp.service.trainer" in (p.info["cmdline"] or [])
                      and any(work in part for part in p.info["cmdline"])]  # fmt: skip
        trainer.kill()
        died = wait_for(api, job_id, FINAL, 120)
        assert died["state"] == "failed" and "exit status" in died["error"], died

        lineage = {n: api.get(f"/jobs/{job_id}/lineage", params={"attempt": n}).json() for n in (1, 2, 3, 4)}
        assert api.get(f"/jobs/{job_id}/lineage", params={"attempt": 9}).status_code == 404
        job = api.get(f"/jobs/{job_id}").json()

    # When each state was last entered; every entry is kept.
    assert [t["state"] for t in job["transitions"]].count("queued") == 4
    assert job["history"]["succeeded"] == first["history"]["succeeded"] < job["history"]["cancelled"]
    assert job["history"]["queued"] > job["history"]["cancelled"]
    assert [a["state"] for a in job["attempts"]] == ["succeeded", "cancelled", "failed", "failed"]
    assert [a["model"] for a in job["attempts"]] == [True, True, False, True]

    runs = {n: lineage[n]["training"]["mlflow_run_id"] for n in (1, 2, 3, 4)}
    assert runs[3] is None and len({runs[1], runs[2], runs[4]}) == 3, runs  # no run opened for a device it lacks
    statuses = {n: tracking.get_run(runs[n]).info.status for n in (1, 2, 4)}
    assert statuses == {1: "FINISHED", 2: "KILLED", 4: "FAILED"}

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    for n, found in lineage.items():
        assert found["dataset"]["fingerprint"] == metadata["fingerprint"]
        assert found["dataset"]["raw_dvc_hash"] == metadata["raw_dvc_hash"] and metadata["raw_dvc_hash"]
        assert found["training"]["attempt"] == n and found["training"]["code"]["commit"] == (head or None)
        assert found["code"]["checked_by"]["package"] == found["training"]["code"]["package"]
    assert lineage[2]["params"]["train"]["epochs"] == 50 and lineage[2]["training"]["overrides"]["epochs"] == 50
    assert lineage[1]["params"]["train"]["extra"]["plots"] is False
    assert lineage[1]["params"]["train"]["extra"]["nbs"] == 8  # conf/'s extra keys kept: merged key by key
    assert lineage[1]["params"]["data"]["classes"] == ["circle", "square", "triangle"]
    # A new training is never announced as a resume.
    assert "resuming after epoch" not in api_proc.output() and api_proc.output().count("a new training") == 4
