"""One pipeline behind both faces: a ZIP uploaded to the service gets, field by field, the report, the metadata and
the figures that `dvc repro` writes for the same files in a project (quality findings and hashes included)."""

from __future__ import annotations

import json
import shutil

import pytest

from factory import Obj, image_bytes, write_sample, zip_folder
from service.conftest import client
from service.test_uploads import CLASSES, sample

pytestmark = pytest.mark.integration


def test_an_upload_gets_exactly_what_dvc_repro_writes_for_the_same_files(make_project, make_service, tmp_path):
    folder = sample(tmp_path / "voc", images=40)
    write_sample(folder, "double", objects=[Obj("circle", (10, 10, 40, 30)), Obj("circle", (10, 10, 40, 30))])
    write_sample(folder, "tiny", objects=[Obj("square", (5, 5, 6, 6))])
    write_sample(folder, "trailing", image=image_bytes("jpeg", (64, 48), seed=5) + b"\0" * 64)
    write_sample(folder, "nosize", size=None)

    project = make_project()
    shutil.copytree(folder, project.root / "data" / "raw")
    project.run("dvc", "add", "-q", "data/raw")
    project.run("dvc", "repro", "metadata")
    report = json.loads((project.root / "data" / "validated" / "report.json").read_text())
    metadata_dir = project.root / "data" / "metadata"
    metadata = json.loads((metadata_dir / "dataset_metadata.json").read_text())
    planted = {"box_duplicate", "box_tiny", "image_trailing_data", "size_missing"}
    assert planted <= set(report["by_code"]), report["by_code"]  # the pipeline finds what was planted

    api_proc = make_service().api(worker=False)
    with client(api_proc.url) as api:
        answer = api.post("/upload-dataset", files={"file": ("voc.zip", zip_folder(folder), "application/zip")},
                          data={"classes": CLASSES})  # fmt: skip
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["job_id"]
        served_report = api.get(f"/jobs/{job_id}/report").json()
        served_metadata = api.get(f"/dataset/metadata/{job_id}").json()
        figures = {name: api.get(f"/jobs/{job_id}/figures/{name}").content for name in served_metadata["figures"]}

    assert served_report == report
    assert served_metadata == metadata  # the quality counts, the fingerprint and DVC's hash of the files included
    assert metadata["raw_dvc_hash"] and metadata["quality"]
    assert figures == {name: (metadata_dir / name).read_bytes() for name in metadata["figures"]}
