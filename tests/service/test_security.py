"""The service's defences, through the real server (`visapp serve` under uvicorn) and its real store (a folder):

- the token: every path but /health and the API's description (/docs, /redoc, /openapi.json: public by choice,
  they hold no job and no data) answers 401 without a valid one, before a body is read;
- ownership: a job of one token is 404 for another, exactly as a job that does not exist;
- ids: anything that is not a job id (`..`, `../x` raw or percent-encoded, too long, unknown) is 404, and no file
  outside the store is read (canary jobs beside the store stay unseen) or created (the folder tree is the same);
- uploads: the ingest's ZIP and tar attacks are refused as `visapp ingest` refuses them (400, the ingest's code
  and message; the job is kept as `rejected` with the archive as received; nothing is extracted anywhere), a body
  that is not an archive is 415 (nothing stored), one past VISAPP_MAX_UPLOAD 413, one upload too many 429;
- two uploads at once, and their trainings at once in one scratch folder, keep to their own files;
- `visapp serve` refuses to start without a token, and `--open` anywhere but on loopback.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import subprocess
import threading
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import VENV_BIN, free_port
from factory import zip_bytes, zip_folder
from ingest.test_archive import ATTACKS, TAR_ATTACKS
from service.conftest import (
    FAST,
    OTHER_TOKEN,
    TINY_TRAINING,
    TOKEN,
    Service,
    client,
    upload,
    wait_for,
    wait_until,
)
from visapp.ingest.archive import ArchiveLimits, ArchiveRefused
from visapp.ingest.sources import Source
from visapp.service import records
from visapp.service.records import Attempt, JobRecord, State
from visapp.service.scratch import CACHE
from visapp.service.store import JobStore, new_job_id

pytestmark = pytest.mark.integration

SECRET = b"canary-0f1e2d3c4b5a: never to be served"
OWNER = hashlib.sha256(TOKEN.encode()).hexdigest()[:16]  # how the service names TOKEN's jobs' owner


def service_env(base: Path, mlflow_uri: str, **extra: str) -> dict[str, str]:
    """`make_service`'s settings, for a service shared by a module."""
    return {
        "VISAPP_API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
        "VISAPP_STORE_URL": (base / "jobs").as_uri(),
        "VISAPP_QUEUE_URL": f"sqlite:///{base / 'queue.db'}",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        **FAST,
        **extra,
    }


def tree(root: Path) -> dict[str, str]:
    """{path: sha256} of every file under root, and {path/: ""} of every folder; the processes' logs and the
    queue's SQLite files (which change on their own) left out."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.name.endswith(".log") or path.name.startswith("queue.db"):
            continue
        if path.is_dir():
            found[f"{rel}/"] = ""
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def raw_request(url: str, method: str, path: str, token: str | None = TOKEN, body: bytes = b"", **headers: str):
    """One request with `path` sent exactly as given (no client normalises `..` or percent-escapes);
    (status, headers, body)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def error_of(status: int, body: bytes) -> dict:
    """The single error shape: {"error": {"code", "message"}, ...}; its `error`."""
    data = json.loads(body)
    assert set(data["error"]) == {"code", "message"}, (status, data)
    return data["error"]


# ---------------------------------------------------------------- one service for the module


@dataclass
class Shared:
    """A `visapp serve --no-worker` with jobs of TOKEN: one ready, one queued (nothing consumes the queue), one
    succeeded (set so in the store, with weights, as a worker leaves it), and canary jobs outside the store."""

    service: Service
    url: str
    root: Path  # holds the service's folder and one canary
    store: JobStore
    ready: str
    queued: str
    done: str
    weights: bytes

    @property
    def work(self) -> Path:
        return Path(self.service.procs[0].env["VISAPP_WORK_DIR"])

    def job_files(self, job_id: str) -> set[str]:
        folder = self.service.job_folder(job_id)
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def plant_canary(folder: Path, template: dict) -> None:
    """A job folder that the service must never see: TOKEN's, succeeded, with weights and metadata."""
    record = {**template, "id": "x", "state": "succeeded", "note": SECRET.decode()}
    (folder / "models" / "000001" / "weights").mkdir(parents=True)
    (folder / "metadata").mkdir()
    (folder / "job.json").write_text(json.dumps(record))
    (folder / "models" / "000001" / "weights" / "best.pt").write_bytes(SECRET)
    (folder / "metadata" / "dataset_metadata.json").write_text(json.dumps({"secret": SECRET.decode()}))


@pytest.fixture(scope="module")
def shared(tmp_path_factory, mlflow_server, dataset_zip):
    root = tmp_path_factory.mktemp("security")
    base = root / "svc"
    base.mkdir()
    service = Service(base, service_env(base, mlflow_server.uri))
    try:
        api_proc = service.api(worker=False)
        with client(api_proc.url) as api:
            made = [upload(api, dataset_zip).json()["job"]["id"] for _ in range(3)]
            ready, queued, done = made
            assert api.post(f"/train-async/{queued}", json=TINY_TRAINING).status_code == 202
        store = JobStore(service.env["VISAPP_STORE_URL"])

        def finished(record: JobRecord) -> JobRecord:  # as a worker leaves a training that succeeded
            record.attempts.append(Attempt(number=1, training=1, state=State.succeeded, queued_at=records.now(),
                                           overrides={}, params=record.params, model=True))  # fmt: skip
            record.training = record.attempt = 1
            return record.move(State.queued).move(State.running).move(State.succeeded)

        records.update(store, done, finished)
        weights = b"weights of a finished job " + os.urandom(64)
        (root / "best.pt").write_bytes(weights)
        store.put(done, "models/000001/weights/best.pt", root / "best.pt")
        (root / "best.pt").unlink()
        # Where `..` from the store (base/jobs), from the work folder (base/work-*) or from the service's folder
        # would lead, and a folder in the store whose name is no job id.
        template = json.loads((base / "jobs" / done / "job.json").read_text())
        for folder in (root / "x", base / "x", base / "jobs" / "x"):
            plant_canary(folder, template)
        yield Shared(service, api_proc.url, root, store, ready, queued, done, weights)
    finally:
        service.stop()


# ---------------------------------------------------------------- the token


def endpoints(shared: Shared, dataset_zip: bytes) -> list[tuple[str, str, dict]]:
    job = shared.ready
    return [
        ("POST", "/upload-dataset", {"files": {"file": ("ds.zip", dataset_zip, "application/zip")}}),
        ("POST", f"/train-async/{job}", {"json": TINY_TRAINING}),
        ("POST", f"/jobs/{shared.queued}/cancel", {}),
        ("GET", f"/jobs/{job}", {}),
        ("GET", "/jobs", {}),
        ("GET", f"/download/model/{shared.done}", {}),
        ("GET", f"/dataset/metadata/{job}", {}),
        ("GET", "/models", {}),
        ("GET", "/models/v1.0.0/download", {}),
        ("GET", "/no/such/route", {}),  # unknown paths too: no route is revealed to a caller without a token
    ]


BAD_CREDENTIALS = {
    "none": None,
    "an unknown token": "Bearer not-a-token-of-this-service",
    "another scheme": f"Basic {TOKEN}",
    "no scheme": TOKEN,
    "a prefix of the token": f"Bearer {TOKEN[:-1]}",
    "the token and more": f"Bearer {TOKEN}x",
    "the token list": f"Bearer {TOKEN},{OTHER_TOKEN}",
    "a scheme and no token": "Bearer",
}


def test_every_path_but_health_and_the_docs_refuses_a_missing_or_wrong_token(shared, dataset_zip):
    before = tree(shared.root)
    for method, path, request in endpoints(shared, dataset_zip):
        for name, authorization in BAD_CREDENTIALS.items():
            headers = {"Authorization": authorization} if authorization is not None else {}
            with client(shared.url, token=None) as anonymous:
                answer = anonymous.request(method, path, headers=headers, **request)
            assert answer.status_code == 401, (method, path, name, answer.text)
            assert answer.json()["error"]["code"] == "unauthorized", (method, path, name)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert tree(shared.root) == before  # no job made, none trained or cancelled

    with client(shared.url) as api:  # the same reads with the token get through (a 404 or a 409 at worst)
        for method, path, request in endpoints(shared, dataset_zip):
            if method == "GET":
                assert api.request(method, path, **request).status_code != 401, (method, path)


def test_health_and_the_api_description_are_public_and_hold_no_job(shared):
    with client(shared.url, token=None) as anonymous:
        for path in ("/health", "/docs", "/redoc", "/openapi.json"):
            answer = anonymous.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert shared.ready not in answer.text and shared.done not in answer.text
        assert set(anonymous.get("/health").json()) == {"ok", "store", "queue", "tracking", "model"}


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(shared):
    """Headers announcing 100 MB, and no body at all: the 401 comes without the body (a server that waited for it
    would answer nothing before the socket's timeout, however generous)."""
    host, port = urllib.parse.urlsplit(shared.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            b"POST /upload-dataset HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 401
        assert json.loads(response.read())["error"]["code"] == "unauthorized"


# ---------------------------------------------------------------- ownership


def test_a_job_of_one_token_is_not_found_for_another(shared, dataset_zip):
    before = tree(shared.root)
    with client(shared.url) as owner, client(shared.url, OTHER_TOKEN) as other:
        seen = {job: owner.get(f"/jobs/{job}").json() for job in (shared.ready, shared.queued, shared.done)}
        assert [r["state"] for r in seen.values()] == ["ready", "queued", "succeeded"]
        nobody = new_job_id()
        for job in [*seen, nobody]:
            for method, path, request in [
                ("GET", f"/jobs/{job}", {}),
                ("POST", f"/jobs/{job}/cancel", {}),
                ("POST", f"/train-async/{job}", {"json": TINY_TRAINING}),
                ("GET", f"/download/model/{job}", {}),
                ("GET", f"/dataset/metadata/{job}", {}),
                ("GET", f"/jobs/{job}/report", {}),
                ("GET", f"/jobs/{job}/figures/flagged.png", {}),
                ("GET", f"/jobs/{job}/lineage", {}),
                ("DELETE", f"/jobs/{job}", {}),
            ]:
                answer = other.request(method, path, **request)
                assert answer.status_code == 404, (method, path, answer.text)
                # Word for word what a job that does not exist gets: nothing tells that it exists.
                assert answer.json() == {
                    "error": {"code": "unknown_job", "message": f"no job {job!r} (for this token): check the id"}
                }
        assert other.get("/jobs").json()["jobs"] == []
        # Another token's job as a paging cursor: refused word for word as an id that does not exist.
        theirs, unknown = (other.get("/jobs", params={"after": job}) for job in (shared.ready, nobody))
        assert theirs.status_code == unknown.status_code == 422
        assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"].replace(nobody, shared.ready)

        # The owner's jobs are as they were, and still the owner's.
        assert {job: owner.get(f"/jobs/{job}").json() for job in seen} == seen
        listed = [job["id"] for job in owner.get("/jobs").json()["jobs"]]
        assert {shared.ready, shared.queued, shared.done} <= set(listed)
        assert owner.get(f"/download/model/{shared.done}").content == shared.weights
        assert owner.get(f"/dataset/metadata/{shared.ready}").json()["overall"]["images"] == 12
    assert tree(shared.root) == before  # no cancel request, no new attempt


# ---------------------------------------------------------------- ids


JOB_PATHS = [
    ("GET", "/jobs/{}"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/train-async/{}"),
    ("GET", "/download/model/{}"),
    ("GET", "/dataset/metadata/{}"),
]
BAD_IDS = [
    "..",
    "../x",
    "../../x",
    "..%2fx",
    "..%2F..%2Fx",
    "%2e%2e",
    "%2e%2e%2fx",
    "%2E%2E%2F%2E%2E%2Fx",
    ".",
    "x",
    "%00",
    "a" * 21,
    "a" * 23,
    "a" * 4000,
    "{ready}%2f..%2f..%2fx",
    "{ready}%00",
    "{ready}.",
    "{swapped}",  # the ready job's id in the other letter case: another id
    "{unknown}",  # well formed, and no such job
]


@pytest.mark.parametrize("raw_id", BAD_IDS, ids=lambda raw: raw[:30])
def test_what_is_not_a_job_id_is_404_and_reaches_nothing_outside_the_store(shared, raw_id):
    job_id = raw_id.format(ready=shared.ready, swapped=shared.ready.swapcase(), unknown=new_job_id())
    before = tree(shared.root)
    for method, template in JOB_PATHS:
        body = json.dumps(TINY_TRAINING).encode() if "train" in template else b""
        status, _, answer = raw_request(
            shared.url, method, template.format(job_id), body=body, **{"Content-Type": "application/json"}
        )
        assert status == 404, (method, template, job_id, answer[:300])
        assert error_of(status, answer)["code"] in {"unknown_job", "not_found"}
        assert SECRET not in answer and b"canary" not in answer
    assert tree(shared.root) == before


# ---------------------------------------------------------------- uploads


def zip_declaring_entries(folder: Path, count: int = 1_000_000) -> Path:
    """A 200-byte ZIP whose (ZIP64) end record declares `count` entries: refused before its directory is read."""
    data = zip_bytes({"ds/Annotations/a.xml": b"<annotation/>"})
    end = data.rfind(b"PK\x05\x06")
    _, _, _, _, _, size, offset, _ = struct.unpack_from("<4s4H2LH", data, end)
    record64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    record = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size, offset, 0)
    path = folder / "a.zip"
    path.write_bytes(data[:end] + record64 + locator + record)
    return path


# The ingest's own attacks (tests/ingest/test_archive.py) that its default limits refuse, which are the
# service's; and one entry-count bomb (the ingest's tests lower the limit to 10 instead).
UPLOAD_ATTACKS = {
    **{f"zip:{name}": (builder, code) for name, (builder, code, _, limits) in ATTACKS.items()
       if limits == ArchiveLimits() and name != "not_a_zip"},  # a body that is no archive at all: 415, below
    **{f"tar:{name}": (builder, code) for name, (builder, code, _, limits) in TAR_ATTACKS.items()
       if limits == ArchiveLimits()},
    "zip:declared_entries": (zip_declaring_entries, "too_many_entries"),
}  # fmt: skip


def ingest_refusal(archive: Path, scratch: Path) -> tuple[str, ArchiveRefused]:
    """How `visapp ingest` refuses `archive` (the same Source: opened, its dataset found, extracted), and at
    which step: "open", "find" or "extract"."""
    step = "open"
    try:
        source = Source(archive, ArchiveLimits())
        try:
            step = "find"
            root = source.find_root()
            step = "extract"
            source.extract(scratch / "out", root)
        finally:
            source.close()
    except ArchiveRefused as exc:
        return step, exc
    pytest.fail(f"the ingest accepts {archive.name}: not an attack")


@pytest.mark.parametrize("attack", sorted(UPLOAD_ATTACKS))
def test_archive_attacks_are_refused_as_the_ingest_refuses_them(shared, attack, tmp_path):
    builder, code = UPLOAD_ATTACKS[attack]
    archive = builder(tmp_path)
    step, refused = ingest_refusal(archive, tmp_path)
    assert refused.code == code
    name = f"attack{''.join(archive.suffixes)}"
    reason = f"{refused.code}: {str(refused).replace(str(archive), repr(name))}"
    before = tree(shared.root)

    with client(shared.url) as api:
        answer = upload(api, archive.read_bytes(), name=name)
        # Refused when opened or extracted: an unsafe archive (400); while its dataset is looked for: no dataset.
        status, kind = (422, "no_dataset") if step == "find" else (400, "unsafe_archive")
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["error"] == {"code": kind, "message": reason}
        assert str(shared.root) not in answer.text  # the server's folders are nobody's business
        job = body["job"]
        assert job["state"] == "rejected" and job["error"] == f"{kind}: {reason}"
        assert api.get(f"/jobs/{job['id']}").json()["state"] == "rejected"
        assert api.post(f"/train-async/{job['id']}", json=TINY_TRAINING).status_code == 409

    # The store keeps the record and the archive as received, and nothing else; nothing was extracted anywhere.
    stored = "upload.tar" if attack.startswith("tar:") else "upload.zip"
    assert shared.job_files(job["id"]) - {".lock"} == {"job.json", stored, "leases/check-000001"}
    assert (shared.service.job_folder(job["id"]) / stored).read_bytes() == archive.read_bytes()
    after = tree(shared.root)
    prefix = f"svc/jobs/{job['id']}/"
    assert {path for path in after if not path.startswith(prefix)} == set(before)
    assert not (shared.work / job["id"]).exists()
    assert not [path for path in after if path.endswith("evil.txt")]


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an archive at all" * 10, b"\x89PNG\r\n\x1a\n" + bytes(100), b'{"a": 1}', b"PK"],
    ids=["empty", "text", "png", "json", "two bytes of zip magic"],
)
def test_a_body_that_is_not_an_archive_is_415_and_nothing_is_kept(shared, data):
    before = tree(shared.root)
    with client(shared.url) as api:
        answer = upload(api, data)
    assert answer.status_code == 415, answer.text
    assert answer.json() == {
        "error": {
            "code": "not_an_archive",
            "message": "the file is not a ZIP or tar archive: upload the dataset as a ZIP",
        }
    }
    assert tree(shared.root) == before  # no job, no scratch left


def test_an_upload_past_the_size_limit_is_413_and_nothing_is_kept(make_service, dataset_zip):
    assert len(dataset_zip) < 1024**2
    service = make_service(VISAPP_MAX_UPLOAD="1M")
    api_proc = service.api(worker=False)
    big = zip_bytes({"ds/JPEGImages/a.jpg": os.urandom(1_200_000)}, zipfile.ZIP_STORED)
    expected = {
        "error": {"code": "too_large", "message": "the upload is larger than the limit of 1,048,576 bytes "
                  "(VISAPP_MAX_UPLOAD)"}
    }  # fmt: skip
    with client(api_proc.url) as api:
        announced = upload(api, big)  # its Content-Length says so: refused before the body is read
        assert announced.status_code == 413 and announced.json() == expected, announced.text

        def chunks():  # no Content-Length: stopped while it streams in
            head, tail = b"--b\r\n", b"\r\n--b--\r\n"
            yield head + b'Content-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]
            yield tail

        streamed = api.post(
            "/upload-dataset", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert streamed.status_code == 413 and streamed.json() == expected, streamed.text
        assert api.get("/jobs").json()["jobs"] == []
        assert upload(api, dataset_zip).status_code == 201  # below the limit
    store = Path(service.env["VISAPP_STORE_URL"].removeprefix("file://"))
    assert len([p for p in store.iterdir() if p.is_dir()]) == 1
    work = Path(api_proc.env["VISAPP_WORK_DIR"])
    assert not work.exists() or not [p for p in work.iterdir() if p.name != CACHE]  # no scratch left


def test_one_upload_more_than_the_limit_is_429_while_the_others_are_received(make_service, dataset_zip):
    """VISAPP_MAX_CONCURRENT_UPLOADS=1: an upload whose body is held half-sent keeps the one slot; others get 429
    until it is finished, then get through. A caller without a token gets 401, not 429 (it takes no slot)."""
    service = make_service(VISAPP_MAX_CONCURRENT_UPLOADS="1")
    api_proc = service.api(worker=False)
    boundary = "held-upload"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="held.zip"\r\n'
            f"Content-Type: application/zip\r\n\r\n"
        ).encode()
        + dataset_zip
        + f"\r\n--{boundary}--\r\n".encode()
    )
    host, port = urllib.parse.urlsplit(api_proc.url).netloc.split(":")
    probe = ("probe.zip", b"not an archive", "application/zip")  # 415 when it passes the gate, 429 when not
    with socket.create_connection((host, int(port)), timeout=60) as held, client(api_proc.url) as api:
        held.sendall(
            f"POST /upload-dataset HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        # The held request reaches the gate a moment after it is sent; from then on, every other upload is 429.
        refused = wait_until(
            lambda: (answer := api.post("/upload-dataset", files={"file": probe})).status_code == 429 and answer,
            30,
            "an upload to be refused while another is received",
        )
        assert refused.json()["error"] == {
            "code": "too_many_uploads",
            "message": "1 uploads are being received already: retry in a minute",
        }
        for _ in range(3):
            assert api.post("/upload-dataset", files={"file": probe}).status_code == 429
        with client(api_proc.url, token=None) as anonymous:
            assert anonymous.post("/upload-dataset", files={"file": probe}).status_code == 401
        assert api.get("/jobs").status_code == 200  # only uploads are gated

        held.sendall(body[1000:])
        response = http.client.HTTPResponse(held)
        response.begin()
        assert response.status == 201, response.read()
        assert json.loads(response.read())["job"]["state"] == "ready"
        assert api.post("/upload-dataset", files={"file": probe}).status_code == 415  # the slot is free again


# ---------------------------------------------------------------- two uploads and two trainings at once


@pytest.mark.slow
def test_two_uploads_at_once_and_their_trainings_never_see_each_others_files(
    make_service, dataset_zip, tmp_path, mlflow_server
):
    """Two datasets (12 and 10 images, classes in different orders) uploaded at the same moment from two
    threads, then trained at the same time by two consumers (the API's and a `visapp worker`) sharing one
    scratch folder: each job keeps its own archive, metadata, classes and MLflow run."""
    other = tmp_path / "other"
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(other), "--images", "10", "--seed", "1"],
                   check=True, capture_output=True)  # fmt: skip
    datasets = {"a": (dataset_zip, "circle,square,triangle"), "b": (zip_folder(other), "triangle,square,circle")}
    service = make_service(VISAPP_WORK_DIR=str(tmp_path / "scratch"))
    api_proc = service.api()
    service.worker().wait_ready()

    start = threading.Barrier(2)
    answers: dict[str, object] = {}

    def send(key: str) -> None:
        data, classes = datasets[key]
        with client(api_proc.url) as api:
            start.wait()
            answers[key] = upload(api, data, classes=classes, name=f"{key}.zip")

    threads = [threading.Thread(target=send, args=(key,)) for key in datasets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = {}
    for key, answer in answers.items():
        assert answer.status_code == 201, answer.text
        bodies[key] = answer.json()
    ids = {key: body["job"]["id"] for key, body in bodies.items()}
    assert ids["a"] != ids["b"]
    assert bodies["a"]["metadata"]["images"] == 12 and bodies["b"]["metadata"]["images"] == 10
    assert bodies["a"]["metadata"]["fingerprint"] != bodies["b"]["metadata"]["fingerprint"]
    assert bodies["b"]["classes"] == ["triangle", "square", "circle"]

    with client(api_proc.url) as api:
        for job_id in ids.values():
            assert api.post(f"/train-async/{job_id}", json=TINY_TRAINING).status_code == 202
        finished = {key: wait_for(api, job_id, {"succeeded", "failed"}, timeout=600) for key, job_id in ids.items()}
        for key, job_id in ids.items():
            assert finished[key]["state"] == "succeeded", f"{finished[key]}\n{api_proc.output()}"
            folder = service.job_folder(job_id)
            assert (folder / "upload.zip").read_bytes() == datasets[key][0]  # each job holds its own upload
            metadata = api.get(f"/dataset/metadata/{job_id}").json()
            assert metadata == json.loads((folder / "metadata" / "dataset_metadata.json").read_text())
            assert metadata["fingerprint"] == bodies[key]["metadata"]["fingerprint"]
            assert [c["name"] for c in metadata["classes"]] == bodies[key]["classes"]
            manifest = (folder / "validated" / "manifest.jsonl").read_text().splitlines()
            assert len(manifest) == bodies[key]["metadata"]["images"]

    import mlflow

    tracking = mlflow.MlflowClient(mlflow_server.uri)
    runs = {key: tracking.get_run(finished[key]["mlflow_run_id"]) for key in ids}
    assert runs["a"].info.run_id != runs["b"].info.run_id
    for key, run in runs.items():
        assert run.data.tags["visapp_job_id"] == ids[key]
        assert run.data.tags["dataset_fingerprint"] == bodies[key]["metadata"]["fingerprint"]
        assert run.data.params["data.classes"] == str(bodies[key]["classes"]), run.data.params
    # The two trainings ran at the same time (each started before the other ended), in one scratch folder.
    histories = [finished[key]["history"] for key in ids]
    assert max(h["running"] for h in histories) < min(h["succeeded"] for h in histories), histories


# ---------------------------------------------------------------- starting the service


def serve(tmp_path: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VISAPP_API_TOKEN"}
    env.update(VISAPP_STORE_URL=(tmp_path / "jobs").as_uri(), VISAPP_WORK_DIR=str(tmp_path / "work"))
    if token is not None:
        env["VISAPP_API_TOKEN"] = token
    return subprocess.run(
        [str(VENV_BIN / "visapp"), "serve", "--port", str(free_port()), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("token", [None, "", " , "], ids=["unset", "empty", "only separators"])
def test_serve_without_a_token_refuses_to_start(tmp_path, token):
    result = serve(tmp_path, token=token)
    assert result.returncode == 2, result
    assert "VISAPP_API_TOKEN is not set: set it (a long random string), or run open on loopback" in result.stderr
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_serve_open_off_loopback_is_refused(tmp_path, host):
    result = serve(tmp_path, "--open", "--host", host, token=TOKEN)
    assert result.returncode == 2, result
    assert f"--open serves without a token: only on loopback (127.0.0.1, ::1, localhost), not {host}" in result.stderr


def test_serve_open_on_loopback_answers_without_a_token(make_service):
    service = make_service(VISAPP_API_TOKEN="")  # none, whatever this process's environment holds
    port = free_port()
    proc = service._start(["serve", "--open", "--no-worker", "--port", str(port)], "open")
    url = f"http://127.0.0.1:{port}"
    import httpx

    jobs_page = wait_until(lambda: _get_or_none(httpx, f"{url}/jobs"), 60, f"the open service:\n{proc.output()}")
    assert jobs_page.status_code == 200 and jobs_page.json()["jobs"] == []


def _get_or_none(httpx, url: str):
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
