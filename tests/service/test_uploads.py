"""Uploads through the real server, as a client sees them: what is refused and how it is said, `on_error=skip`,
the reads of a checked dataset (its whole report, its figures), deleting a job, and the API's own manners
(the job id at the top of an upload's answer, `/docs` without internet, 405 with `Allow`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import VENV_BIN
from factory import Obj, image_bytes, write_sample, zip_folder
from service.conftest import TINY_TRAINING, client, upload, wait_for

pytestmark = pytest.mark.integration

CLASSES = "circle,square,triangle"


def sample(folder: Path, images: int = 12) -> Path:
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(folder), "--images", str(images)],
                   check=True, capture_output=True)  # fmt: skip
    return folder


def images_only(tmp_path: Path) -> bytes:
    """A folder of 8 images and no annotation at all: the fewest of these images whose hashes give the val split
    one image (train 7, val 1) under conf/'s 0.8/0.1/0.1 split."""
    folder = tmp_path / "images-only"
    for index in range(8):
        (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (folder / "JPEGImages" / f"{index:03d}.jpg").write_bytes(image_bytes("jpeg", (64, 48), seed=index))
    return zip_folder(folder)


def planted(tmp_path: Path) -> Path:
    """The sample's first 12 images, plus: two samples with a zero-area box (bbox_invalid, an error), a JPEG with
    bytes after its end marker (image_trailing_data) and an annotation without <size> (size_missing)."""
    folder = sample(tmp_path / "planted")
    for stem in ("zero-a", "zero-b"):
        write_sample(folder, stem, objects=[Obj("square", (20, 10, 20, 30))])
    write_sample(folder, "trailing", image=image_bytes("jpeg", (64, 48), seed=5) + b"\0" * 64)
    write_sample(folder, "nosize", size=None)
    return folder


# ---------------------------------------------------------------- what is refused, and how


def test_images_without_annotations_need_class_names_and_are_ready_with_them(make_service, tmp_path):
    data = images_only(tmp_path)
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        refused = upload(api, data, classes=None)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["error"]["code"] == "no_classes" and "`classes`" in body["error"]["message"]
        assert "conf/" not in refused.text and body["job_id"] == body["job"]["id"]
        job = api.get(f"/jobs/{body['job_id']}").json()
        assert job["state"] == "rejected" and job["error"].startswith("no_classes: ")
        assert api.post(f"/train-async/{body['job_id']}", json=None).status_code == 409
        assert api.post(f"/jobs/{body['job_id']}/cancel").status_code == 409

        accepted = upload(api, data, classes=CLASSES)
        assert accepted.status_code == 201, accepted.text
        answer = accepted.json()
        assert answer["job"]["state"] == "ready" and answer["metadata"]["objects"] == 0
        assert {"annotation_missing": 8, "class_absent": 3}.items() <= answer["validation"]["by_code"].items()
        # A training request with a JSON null body is a training with conf/'s params.
        queued = api.post(f"/train-async/{answer['job_id']}", json=None)
        assert queued.status_code == 202 and queued.json()["state"] == "queued", queued.text
        assert queued.json()["attempts"][0]["overrides"] == {}


def test_a_worker_refuses_and_rejects_in_the_same_words_and_keeps_the_report(make_service, tmp_path):
    """Past VISAPP_INLINE_LIMIT a worker checks the upload (202): a refusal ends the job with the same error as
    in the request, and a rejected dataset keeps its whole report to read."""
    service = make_service(VISAPP_INLINE_LIMIT="1")
    api_proc = service.api()  # its own consumer checks the uploads
    with client(api_proc.url) as api:
        answers = {
            "no classes": upload(api, images_only(tmp_path), classes=None),
            "rejected": upload(api, zip_folder(planted(tmp_path)), classes=CLASSES),
        }
        assert {key: a.status_code for key, a in answers.items()} == {"no classes": 202, "rejected": 202}
        jobs = {key: wait_for(api, a.json()["job_id"], {"ready", "rejected", "failed"}, 120)
                for key, a in answers.items()}  # fmt: skip
    assert jobs["no classes"]["state"] == "rejected", jobs
    assert jobs["no classes"]["error"].startswith("no_classes: the annotations name no object")
    rejected = jobs["rejected"]
    assert rejected["state"] == "rejected" and "2 of 16 samples rejected (bbox_invalid 2)" in rejected["error"]
    assert "on_error=skip" in rejected["error"] and f"GET /jobs/{rejected['id']}/report" in rejected["error"]
    with client(api_proc.url) as api:
        report = api.get(f"/jobs/{rejected['id']}/report").json()
        assert report["rejected"] == 2 and {i["path"] for i in report["issues"] if i["code"] == "bbox_invalid"} == {
            "Annotations/zero-a.xml", "Annotations/zero-b.xml"
        }  # fmt: skip
        assert api.get(f"/jobs/{jobs['no classes']['id']}/report").status_code == 409  # never became a dataset
        assert api.get(f"/dataset/metadata/{rejected['id']}").status_code == 409


def test_on_error_skip_keeps_the_accepted_samples_and_says_what_it_left_out(make_service, tmp_path):
    data = zip_folder(planted(tmp_path))
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        strict = upload(api, data, classes=CLASSES)
        assert strict.status_code == 422 and strict.json()["error"]["code"] == "dataset_rejected", strict.text
        assert strict.json()["report"]["by_code"]["bbox_invalid"] == 2

        skipped = api.post("/upload-dataset", files={"file": ("ds.zip", data, "application/zip")},
                           data={"classes": CLASSES, "on_error": "skip"})  # fmt: skip
        assert skipped.status_code == 201, skipped.text
        body = skipped.json()
        assert body["job"]["state"] == "ready" and body["job"]["on_error"] == "skip"
        assert body["validation"]["left_out"] == {"bbox_invalid": 2}
        assert body["validation"]["accepted"] == 14 and body["metadata"]["images"] == 14
        assert "2 sample(s) left out (on_error=skip): bbox_invalid 2" in body["note"]
        bad = api.post("/upload-dataset", files={"file": ("ds.zip", data, "application/zip")},
                       data={"on_error": "sometimes"})  # fmt: skip
        assert bad.status_code == 422 and "on_error" in bad.json()["error"]["message"]


# ---------------------------------------------------------------- reads


def test_the_whole_report_and_every_figure_of_a_checked_dataset_are_served(make_service, tmp_path):
    data = zip_folder(planted(tmp_path))
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        answer = api.post("/upload-dataset", files={"file": ("ds.zip", data, "application/zip")},
                          data={"classes": CLASSES, "on_error": "skip"})  # fmt: skip
        job_id = answer.json()["job_id"]
        report = api.get(f"/jobs/{job_id}/report").json()
        found = {(issue["code"], issue["path"]) for issue in report["issues"]}
        assert {("image_trailing_data", "JPEGImages/trailing.jpg"), ("size_missing", "Annotations/nosize.xml")} <= found
        assert report["by_code"] == answer.json()["validation"]["by_code"]

        metadata = api.get(f"/dataset/metadata/{job_id}").json()
        assert metadata["figures"] and metadata["quality"] is not None and metadata["raw_dvc_hash"].endswith(".dir")
        for name in metadata["figures"]:
            figure = api.get(f"/jobs/{job_id}/figures/{name}")
            assert figure.status_code == 200 and figure.headers["content-type"] == "image/png", name
            assert figure.content.startswith(b"\x89PNG\r\n\x1a\n")
        unknown = api.get(f"/jobs/{job_id}/figures/secret.png")
        assert unknown.status_code == 404 and metadata["figures"][0] in unknown.json()["error"]["message"]


def test_a_finished_job_is_deleted_with_its_files_and_an_active_one_is_not(make_service, dataset_zip):
    service = make_service()
    api_proc = service.api(worker=False)  # nothing consumes the queue: a queued job stays queued
    with client(api_proc.url) as api:
        ready, queued = (upload(api, dataset_zip).json()["job_id"] for _ in range(2))
        assert api.post(f"/train-async/{queued}", json=TINY_TRAINING).status_code == 202
        busy = api.delete(f"/jobs/{queued}")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "job_active", busy.text
        assert api.delete(f"/jobs/{ready}").status_code == 204
        assert not service.job_folder(ready).exists()
        assert api.get(f"/jobs/{ready}").status_code == 404
        assert [job["id"] for job in api.get("/jobs").json()["jobs"]] == [queued]
        assert api.post(f"/jobs/{queued}/cancel").status_code == 202
        assert api.delete(f"/jobs/{queued}").status_code == 204 and not service.job_folder(queued).exists()


# ---------------------------------------------------------------- manners


def test_the_docs_load_their_assets_from_the_service_itself(make_service):
    api_proc = make_service().api(worker=False)
    with client(api_proc.url, token=None) as anyone:
        for page in ("/docs", "/redoc"):
            html = anyone.get(page)
            assert html.status_code == 200, page
            assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
            for asset in assets:
                assert anyone.get(asset).status_code == 200, asset
        assert anyone.get("/docs-assets/../jobs").status_code in (401, 404)


def test_a_method_a_path_does_not_take_is_405_with_the_ones_it_does(make_service, dataset_zip):
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        job_id = upload(api, dataset_zip).json()["job_id"]
        for method, path, allowed in [("PUT", f"/jobs/{job_id}", "DELETE, GET"), ("POST", "/jobs", "GET"),
                                      ("GET", "/upload-dataset", "POST")]:  # fmt: skip
            answer = api.request(method, path)
            assert answer.status_code == 405 and answer.headers["allow"] == allowed, (method, path)
            assert answer.json()["error"]["message"].endswith(f"use {allowed}")


def test_the_folder_taken_as_the_dataset_is_named_and_what_it_left_out_is_said(make_service, tmp_path):
    """A VOC subset zipped with its annotations in one folder and its images in another: the answer names the
    folder taken and says where the images are, so the client knows why every sample is rejected."""
    folder = tmp_path / "subset"
    for stem in ("2008_000001", "2008_000002", "2008_000003"):
        write_sample(folder / "VOC2012", stem)
        (folder / "VOC2012" / "JPEGImages" / f"{stem}.jpg").rename(folder / f"{stem}.jpg")
    (folder / "VOC2012" / "JPEGImages").rmdir()
    (folder / "images").mkdir()
    for image in folder.glob("*.jpg"):
        image.rename(folder / "images" / image.name)
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        answer = upload(api, zip_folder(folder), classes=CLASSES)
    assert answer.status_code == 422, answer.text
    job = answer.json()["job"]
    assert job["dataset"]["root"] == "VOC2012" and answer.json()["report"]["by_code"]["image_missing"] == 3
    assert "3 image(s) outside it were left out: 'images/' (3)" in job["error"], job["error"]
    assert job["dataset"]["notes"] and job["dataset"]["notes"][0] in job["error"]


def test_a_dataset_with_an_empty_val_split_says_so_and_is_not_trained(make_service, tmp_path):
    """Nine images whose hashes send none to val: the upload is ready (its data is valid) and its answer says val
    is empty; a training request is refused at once, naming the split, instead of failing in Ultralytics later."""
    folder = tmp_path / "nine"
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(folder), "--images", "9", "--seed", "1"],
                   check=True, capture_output=True)  # fmt: skip
    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        answer = upload(api, zip_folder(folder), classes=CLASSES)
        assert answer.status_code == 201 and answer.json()["metadata"]["splits"].get("val", 0) == 0, answer.text
        assert "the val split is empty" in answer.json()["note"]
        refused = api.post(f"/train-async/{answer.json()['job_id']}", json=TINY_TRAINING)
    assert refused.status_code == 409 and "val split is empty" in refused.json()["error"]["message"], refused.text
