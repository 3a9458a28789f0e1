"""End to end through the real server: upload a ZIP, train one epoch in the background, poll, download the
model and load it with Ultralytics, fetch the dataset's metadata; with the store in a folder and on S3."""

from __future__ import annotations

import io
import zipfile

import pytest

from service.conftest import TINY_TRAINING, client, upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def upload_train_download(service, dataset_zip: bytes, tmp_path) -> dict:
    api_proc = service.api()
    with client(api_proc.url) as api:
        answer = upload(api, dataset_zip)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        job_id = body["job"]["id"]
        assert body["job"]["state"] == "ready" and body["classes"] == ["circle", "square", "triangle"]
        assert body["validation"]["accepted"] == 12 and body["metadata"]["images"] == 12

        queued = api.post(f"/train-async/{job_id}", json=TINY_TRAINING)
        assert queued.status_code == 202 and queued.json()["state"] == "queued", queued.text
        job = wait_for(api, job_id, {"succeeded", "failed"})
        assert job["state"] == "succeeded", f"{job}\n{api_proc.output()}"
        assert job["progress"]["epoch"] == 1 and job["progress"]["epochs"] == 1
        assert job["mlflow_run_id"] and set(job["history"]) >= {"uploaded", "validating", "ready", "queued", "running"}

        weights = api.get(f"/download/model/{job_id}")
        assert weights.status_code == 200 and weights.headers["content-type"] == "application/octet-stream"
        (tmp_path / "best.pt").write_bytes(weights.content)
        metadata = api.get(f"/dataset/metadata/{job_id}")
        assert metadata.status_code == 200
        assert metadata.json()["fingerprint"] == body["metadata"]["fingerprint"]
        # The training was evaluated and audited as the evaluate stage does, and its model answers an image.
        evaluation = api.get(f"/jobs/{job_id}/evaluation").json()
        assert evaluation["split"] in ("test", "val") and set(evaluation["classes"]) == {"circle", "square", "triangle"}
        audit = api.get(f"/jobs/{job_id}/audit").json()
        assert audit["images"] == len(audit["findings"]) > 0
        with zipfile.ZipFile(io.BytesIO(dataset_zip)) as archive:
            image = ("a.jpg", archive.read("JPEGImages/000001.jpg"), "image/jpeg")
        found = api.post(f"/jobs/{job_id}/predict", files={"image": image}, data={"confidence": "0.001"})
        assert found.status_code == 200 and found.json()["model"]["runtime"] == "pytorch", found.text
        assert found.json()["image"]["width"] == 256 and found.json()["confidence"] == 0.001
    from ultralytics import YOLO

    model = YOLO(str(tmp_path / "best.pt"))
    assert list(model.names.values()) == ["circle", "square", "triangle"]
    return job


def test_upload_train_download_with_a_folder_store(make_service, dataset_zip, tmp_path, mlflow_server):
    service = make_service()
    job = upload_train_download(service, dataset_zip, tmp_path)
    import mlflow

    run = mlflow.MlflowClient(mlflow_server.uri).get_run(job["mlflow_run_id"])
    assert run.data.tags["visapp_job_id"] == job["id"] and run.info.status == "FINISHED"


def test_upload_train_download_with_the_store_on_s3(make_service, dataset_zip, tmp_path, s3_server, monkeypatch):
    s3_server.create_bucket("visapp-jobs")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    service = make_service(store_url="s3://visapp-jobs/jobs")
    job = upload_train_download(service, dataset_zip, tmp_path)
    import boto3

    keys = {
        item["Key"]
        for item in boto3.client("s3", endpoint_url=s3_server.endpoint)
        .list_objects_v2(Bucket="visapp-jobs", Prefix=f"jobs/{job['id']}/")
        .get("Contents", [])
    }
    prefix = f"jobs/{job['id']}/"
    assert {f"{prefix}job.json", f"{prefix}upload.zip", f"{prefix}models/000001/weights/best.pt"} <= keys
    assert f"{prefix}metadata/dataset_metadata.json" in keys and f"{prefix}validated/report.json" in keys
