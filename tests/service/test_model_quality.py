"""Model quality, end to end in a project: `dvc repro` evaluates and audits after training (and a second one reruns
nothing); a worse candidate is refused at the gate of prod, naming the classes, and `--force --reason` keeps the
reason in the tag; `visapp compare` and `visapp audit` print their tables; `visapp export` writes an ONNX file whose
boxes match PyTorch's, tracked with DVC; the API predicts with a released version (PNG, a JPEG with an EXIF
rotation, a file that is no image, an image past the size limit).

v1 is a model that sees something (120 images at 128 px, 40 epochs: about 1.5 minutes here, test mAP50 about 0.3);
v2 is the same recipe stopped after 3 epochs.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import Project
from service.conftest import client

pytestmark = pytest.mark.slow

GOOD = [
    "train.epochs=40",
    "train.imgsz=128",
    "train.batch=8",
    "train.workers=0",
    "train.device=cpu",
    "train.extra.plots=false",
    "tracking.experiment=vis-model-quality",
]
WORSE = [*GOOD[1:], "train.epochs=3"]


def oversized_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims width x height pixels (past data.max_image_pixels): its size is checked first."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_server, mlflow_server) -> Project:
    """v1 trained, evaluated, released to prod (and pushed); the workspace then holds it."""
    from registry.test_registry import _new_project

    project = _new_project(tmp_path_factory.mktemp("quality") / "project")
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    project.run("visapp", "sample", "--out", "data/raw", "--images", "120", env=env)
    project.run("dvc", "add", "-q", "data/raw")
    s3_server.attach(project, bucket="vis-quality")
    project.set_params(*GOOD)
    project.commit("a model that sees something")
    project.run("dvc", "repro", env=env)
    project.commit("v1 trained and evaluated")
    project.run("visapp", "release", "--stage", "prod", "--push", env=env)
    project.env = env  # type: ignore[attr-defined]
    return project


def test_dvc_repro_evaluates_and_audits_after_training_then_reruns_nothing(project):
    model = project.root / "models" / "yolo"
    evaluation = json.loads((model / "eval.json").read_text())
    assert evaluation["split"] == "test" and evaluation["note"] is None and evaluation["images"] > 0
    assert set(evaluation["classes"]) == {"circle", "square", "triangle"}
    assert set(evaluation["classes"]["circle"]) == {"precision", "recall", "mAP50", "mAP50-95", "images", "objects"}
    assert evaluation["overall"]["mAP50"] > 0.05 and evaluation["inference_ms_per_image"] > 0
    assert {"confusion_matrix.png", "BoxPR_curve.png"} <= {p.name for p in (model / "eval_plots").iterdir()}
    audit = json.loads((model / "audit.json").read_text())
    assert audit["splits"] == ["val", "test"] and audit["images"] == len(audit["findings"]) > evaluation["images"]
    scores = [finding["score"] for finding in audit["findings"]]
    assert scores == sorted(scores) and (model / "audit.png").stat().st_size > 10_000
    again = project.run("dvc", "repro", env=project.env)
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout
    table = project.run("visapp", "audit", "--top", "3").stdout.splitlines()
    assert table[0].startswith(f"label audit of {audit['images']} held-out images") and len(table) == 6
    assert f"data/raw/{audit['findings'][0]['image']}" in table[3]


def test_a_worse_candidate_is_refused_at_the_gate_and_a_forced_one_keeps_its_reason(project):
    project.set_params(*WORSE)
    project.commit("v2: stopped after 3 epochs")
    project.run("dvc", "repro", env=project.env)
    project.commit("v2 trained")
    refused = project.run("visapp", "release", "--stage", "prod", check=False, env=project.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr  # a refusal, not a crash
    assert "refused: the candidate is worse than yolo@v1.0.0 (in prod) on the current test split" in refused.stderr
    assert "mAP50-95" in refused.stderr and "class '" in refused.stderr and "--force" in refused.stderr
    assert project.run("git", "tag", "-l", "yolo@v2*").stdout == ""  # nothing tagged

    forced = project.run("visapp", "release", "--stage", "prod", "--force", "--reason", "the labels of v1 leaked",
                         env=project.env)  # fmt: skip
    assert "released yolo@v2.0.0" in forced.stdout and "promoted: yolo#prod#" in forced.stdout
    message = project.run("git", "tag", "-l", "--format=%(contents)", "yolo@v2.0.0").stdout
    assert "gate: forced past yolo@v1.0.0" in message and "reason: the labels of v1 leaked" in message

    compared = project.run("visapp", "compare", "yolo@v1.0.0", "workspace", env=project.env).stdout
    assert "yolo@v1.0.0 (A) vs workspace (B) on the test split" in compared
    assert {"circle", "square", "triangle", "all"} <= {line.split()[0] for line in compared.splitlines()[3:]}


def test_an_onnx_export_matches_pytorch_and_the_api_predicts_with_it(project, make_service, tmp_path):
    exported = project.run("visapp", "export", "yolo@v1.0.0", "--format", "onnx", "--push", env=project.env).stdout
    assert "parity with PyTorch on" in exported and " 0 boxes matched" not in exported
    dvc_file = project.root / "models" / "exports" / "yolo" / "v1.0.0.onnx.dvc"
    assert dvc_file.is_file()
    project.commit("the ONNX export of v1")

    service = make_service()
    service.cwd = project.root
    api_proc = service.api(worker=False)
    png, rotated = io.BytesIO(), io.BytesIO()
    image = Image.open(project.root / "data" / "raw" / "JPEGImages" / "000001.jpg").convert("RGB")
    image.save(png, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees: width and height swap
    image.crop((0, 0, 256, 160)).save(rotated, "JPEG", exif=exif.tobytes())
    with client(api_proc.url) as api:
        onnx = api.get("/models/yolo@v1.0.0/download", params={"format": "onnx"})
        assert onnx.status_code == 200 and onnx.content.startswith(b"\x08")  # an ONNX protobuf
        found = api.post(
            "/models/yolo@v1.0.0/predict",
            files={"image": ("a.png", png.getvalue(), "image/png")},
            data={"confidence": "0.01"},
        )  # a model of 1.5 minutes: its boxes are not confident
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["model"]["runtime"] == "onnxruntime" and body["image"] == {"width": 256, "height": 256,
                                                                             "format": "png"}  # fmt: skip
        assert body["boxes"] and all(box["class"] in ("circle", "square", "triangle") for box in body["boxes"])
        turned = api.post("/models/yolo@v1.0.0/predict", files={"image": ("r.jpg", rotated.getvalue(), "image/jpeg")})
        assert turned.status_code == 200 and turned.json()["image"]["width"] == 160, turned.text  # the frame trained on
        for data, status, code in [(b"not an image at all", 415, "image_unreadable"),
                                   (png.getvalue()[:2000], 422, "image_truncated"),
                                   (oversized_png(), 413, "image_too_large")]:  # fmt: skip
            refused = api.post("/models/yolo@v1.0.0/predict", files={"image": ("x.png", data, "image/png")})
            assert refused.status_code == status and refused.json()["error"]["code"] == code, refused.text
        missing = api.post("/models/yolo@v9.0.0/predict", files={"image": ("a.png", png.getvalue(), "image/png")})
        assert missing.status_code == 404
    assert Path(project.root / "models" / "exports" / "yolo" / "v1.0.0.onnx").is_file()


def test_audit_folds_audits_the_train_split_with_models_that_did_not_train_on_it(project):
    """`audit.folds: 2`: two extra trainings (the current recipe, 3 epochs) each predict on the half of the train split
    they left out; the audit then holds every val, test and train image once, and the fold runs leave nothing behind."""
    from visapp.formats.yolo import DATA_YAML, read_data_yaml, split_list_images

    project.set_params("audit.folds=2", "audit.confidence=0.0001")  # 3-epoch models are seldom sure of anything
    project.commit("audit the train split too")
    ran = project.run("dvc", "repro", env=project.env)
    assert "Running stage 'evaluate'" in ran.stdout and "Running stage 'train'" not in ran.stdout
    said = ran.stdout + ran.stderr
    assert "fold 1 of 2: training on" in said and "fold 2 of 2: training on" in said
    audit = json.loads((project.root / "models" / "yolo" / "audit.json").read_text())
    assert audit["splits"] == ["val", "test", "train"]
    yolo, raw = project.root / "data" / "yolo", project.root / "data" / "raw"
    declared = read_data_yaml(yolo / DATA_YAML)
    for split in ("val", "test", "train"):
        audited = sorted(f["image"] for f in audit["findings"] if f["split"] == split)
        assert audited == split_list_images(yolo, raw, declared.splits[split])
    assert any(f["predicted"] for f in audit["findings"] if f["split"] == "train")  # the fold models answered
    assert list((project.root / ".cache" / "evaluate").iterdir()) == []
