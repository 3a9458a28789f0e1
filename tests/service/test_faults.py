"""Faults, with real processes: an API restarted, a worker killed mid-training (another resumes from the
checkpoint), a training cancelled while it runs, a queued job cancelled before any worker saw it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import time
import zipfile

import httpx
import psutil
import pytest

from service.conftest import TINY_TRAINING, client, upload, wait_for, wait_until
from visapp.service.scratch import CACHE

pytestmark = pytest.mark.integration

FINAL = {"succeeded", "failed", "cancelled"}


def job_of(api, job_id: str) -> dict:
    answer = api.get(f"/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def uploaded(api, data: bytes) -> str:
    answer = upload(api, data)
    assert answer.status_code == 201, answer.text
    return answer.json()["job"]["id"]


def trainers_under(folder) -> list[psutil.Process]:
    """Live training subprocesses whose scratch folder is under `folder` (a worker's VISAPP_WORK_DIR)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "visapp.service.trainer" in cmdline and any(str(folder) in part for part in cmdline):
            found.append(proc)
    return found


def lease_pids(folder) -> dict[str, int]:
    """{attempt: pid of the worker that took it} from a job's `leases/train-*` (each holds `host:pid:thread`)."""
    leases = sorted((folder / "leases").glob("train-*"))
    return {path.name.removeprefix("train-"): int(path.read_text().split(":")[1]) for path in leases}


# ---------------------------------------------------------------- the API restarted


def test_a_restarted_api_has_every_job_in_the_state_it_left(make_service, dataset_zip):
    service = make_service(VISAPP_STALE_AFTER_S="30")
    first = service.api(worker=False)  # no consumer: queued jobs stay queued
    with client(first.url) as api:
        ready = uploaded(api, dataset_zip)
        queued = uploaded(api, dataset_zip)
        assert api.post(f"/train-async/{queued}", json=TINY_TRAINING).status_code == 202
        cancelled = uploaded(api, dataset_zip)
        assert api.post(f"/train-async/{cancelled}", json=TINY_TRAINING).status_code == 202
        assert api.post(f"/jobs/{cancelled}/cancel").status_code == 202
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("notes.txt", "no dataset in here")
        refused = upload(api, buffer.getvalue())
        assert refused.status_code == 422, refused.text
        rejected = refused.json()["job"]["id"]
        before = {job_id: job_of(api, job_id) for job_id in (ready, queued, cancelled, rejected)}
        listed = api.get("/jobs").json()
    assert {job_id: job["state"] for job_id, job in before.items()} == {
        ready: "ready", queued: "queued", cancelled: "cancelled", rejected: "rejected"
    }  # fmt: skip
    first.stop()
    assert first.proc.returncode is not None

    second = service.api(worker=False)
    with client(second.url) as api:
        after = {job_id: job_of(api, job_id) for job_id in before}
        assert after == before  # every field: state, history, attempt, overrides, validation, error
        assert api.get("/jobs").json() == listed
        assert [job["id"] for job in listed["jobs"]] == [ready, queued, cancelled, rejected]
        health = api.get("/health").json()
        assert health["queue"]["ok"] and not health["queue"]["detail"].startswith("0 "), health  # messages kept
        # The restarted API acts on the old jobs: the queued one can be cancelled, the cancelled one queued.
        assert api.post(f"/jobs/{queued}/cancel").json()["state"] == "cancelled"
        again = api.post(f"/train-async/{cancelled}", json=TINY_TRAINING)
        assert again.status_code == 202 and again.json()["attempt"] == 2, again.text


# ---------------------------------------------------------------- cancelling


def test_cancelling_a_queued_job_is_immediate_and_it_can_be_queued_again(make_service, dataset_zip):
    service = make_service(VISAPP_STALE_AFTER_S="30")
    api_proc = service.api(worker=False)  # and no `visapp worker`: nothing takes the message
    with client(api_proc.url) as api:
        job_id = uploaded(api, dataset_zip)
        queued = api.post(f"/train-async/{job_id}", json=TINY_TRAINING)
        assert queued.status_code == 202 and queued.json()["state"] == "queued", queued.text

        cancelled = api.post(f"/jobs/{job_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled", cancelled.text
        job = job_of(api, job_id)
        assert job["state"] == "cancelled" and "cancelled" in job["history"] and job["attempt"] == 1
        again = api.post(f"/jobs/{job_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "not_active", again.text

        requeued = api.post(f"/train-async/{job_id}", json=TINY_TRAINING)
        assert requeued.status_code == 202, requeued.text
        assert requeued.json()["state"] == "queued" and requeued.json()["attempt"] == 2
        assert job_of(api, job_id)["state"] == "queued"
        assert not (service.job_folder(job_id) / "cancel").exists()  # the old request cannot stop the new attempt


@pytest.mark.slow
def test_cancelling_a_running_training_stops_it_and_keeps_its_checkpoint(make_service, dataset_zip):
    epochs = 50  # far more than it gets to run
    service = make_service(VISAPP_STALE_AFTER_S="30")
    api_proc = service.api()  # its own consumer runs the training
    with client(api_proc.url) as api:
        job_id = uploaded(api, dataset_zip)
        assert api.post(f"/train-async/{job_id}", json={**TINY_TRAINING, "epochs": epochs}).status_code == 202
        wait_until(lambda: ((job_of(api, job_id).get("progress") or {}).get("epoch") or 0) >= 1, 300, "the first epoch")
        asked = time.monotonic()
        answer = api.post(f"/jobs/{job_id}/cancel")
        assert answer.status_code == 202, answer.text
        job = wait_for(api, job_id, FINAL, timeout=120)
        took = time.monotonic() - asked
        print(f"cancelled {took:.1f} s after the request, at epoch {job['progress']['epoch']}")
    assert job["state"] == "cancelled", f"{job}\n{api_proc.output()}"
    assert 1 <= job["progress"]["epoch"] < epochs and job["lease"] is None and job["error"] is None
    folder = service.job_folder(job_id)
    # One checkpoint is kept, the one its record names, and its weights are whole (a torch zip archive).
    stored = json.loads((folder / "checkpoint.json").read_text())["snapshot"]
    kept = list((folder / "checkpoint").glob("*/*/run/weights/last.pt"))
    assert [p.relative_to(folder / "checkpoint").parts[0] for p in kept] == [stored], kept
    assert zipfile.is_zipfile(kept[0]), sorted(p.name for p in (folder / "checkpoint").rglob("*"))
    assert not list((folder / "checkpoint").rglob(".visapp-view")), "a checkpoint stores no dataset view"
    # The cancelled attempt keeps its log and its best weights so far: downloadable as that attempt's, not as the
    # job's model (no training of it succeeded).
    assert (folder / "models" / "000001" / "train.log").is_file()
    with client(api_proc.url) as api:
        assert api.get(f"/download/model/{job_id}").status_code == 409
        kept = api.get(f"/download/model/{job_id}", params={"attempt": 1})
        assert kept.status_code == 200 and zipfile.is_zipfile(io.BytesIO(kept.content))
    assert not trainers_under(service.base), "the training subprocess outlived its cancel"


# ---------------------------------------------------------------- a worker killed mid-training


@pytest.mark.slow
def test_a_killed_worker_s_training_resumes_on_another_worker_from_its_checkpoint(
    make_service, redis_queue, dataset_zip
):
    epochs = 5
    service = make_service(queue_url=redis_queue)  # FAST: a lease is stale 10 s after its last heartbeat
    first = service.worker()
    api_proc = service.api(worker=False)  # it runs a reaper too
    with client(api_proc.url) as api:
        job_id = uploaded(api, dataset_zip)
        first.wait_ready()
        queued = api.post(f"/train-async/{job_id}", json={**TINY_TRAINING, "epochs": epochs})
        assert queued.status_code == 202, queued.text
        second = service.worker()  # starts while the first trains; idle until the job is queued again

        def past_epoch_two() -> dict | None:
            job = job_of(api, job_id)
            return job if ((job.get("progress") or {}).get("epoch") or 0) >= 2 else None

        job = wait_until(past_epoch_two, 300, "epoch 2 of the first attempt", every=0.2)
        assert job["state"] == "running" and job["attempt"] == 1, job
        reached = job["progress"]["epoch"]
        assert reached < epochs, f"the training ran out before the kill: use more epochs ({job})"
        first.kill()  # SIGKILL: the worker and its training, as if the machine died
        killed = time.monotonic()
        # The training subprocess must not outlive its worker (it would train on, into the same MLflow run).
        wait_until(lambda: not trainers_under(first.env["VISAPP_WORK_DIR"]), 30, "the orphaned trainer to end")
        second.wait_ready()
        job = wait_for(api, job_id, FINAL, timeout=600)
        recovered = time.monotonic() - killed
    assert job["state"] == "succeeded", f"{job}\n{second.output()}"
    assert job["attempt"] == 2 and "attempt 1 lost its worker" in job["note"], job
    assert job["progress"]["epoch"] == epochs and job["progress"]["epochs"] == epochs

    folder = service.job_folder(job_id)
    assert lease_pids(folder) == {"000001": first.proc.pid, "000002": second.proc.pid}
    assert [p.name for p in (folder / "requeues").iterdir()] == ["train-000001"]  # one reaper won
    # The second worker resumed after the epochs the first one finished, not from epoch 1.
    log = (folder / "models" / "000002" / "train.log").read_text(errors="replace")
    resumed = [int(n) for n in re.findall(r"resuming after epoch (\d+)", log)]
    assert len(resumed) == 1 and resumed[0] >= reached, log[-3000:]
    # Its epochs (its worker logs the newest epoch of each second) come after those, up to the last.
    after = second.epochs_reported(job_id)
    assert after and after == sorted(set(after)) and after[0] > resumed[0] and after[-1] == epochs, second.output()
    assert 0 < max(first.epochs_reported(job_id), default=0) <= resumed[0]  # the first synced each epoch it told
    with (folder / "models" / "000002" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(row["epoch"])) for row in rows] == list(range(1, epochs + 1))
    print(f"epoch {reached} reached before the kill; resumed after {resumed[0]}; succeeded {recovered:.0f} s later")


# ---------------------------------------------------------------- the API killed while it checks an upload


def test_an_api_killed_while_it_checks_an_upload_leaves_the_job_to_be_checked_again(make_service, tmp_path):
    """SIGKILL of `visapp serve` in the middle of an upload's check (which it runs in the request): the check's
    lease goes stale, the restarted service's reaper queues the check again, its consumer checks the upload, and the
    dead process's scratch folder is gone."""
    import threading

    from factory import zip_folder
    from service.test_uploads import sample

    data = zip_folder(sample(tmp_path / "voc", images=400))  # a check of several seconds
    work = tmp_path / "work"
    service = make_service(VISAPP_WORK_DIR=str(work))  # one machine: a restart keeps its work folder
    first = service.api(worker=False)
    store = service.job_folder("x").parent

    def send() -> None:
        with client(first.url) as api, contextlib.suppress(httpx.HTTPError):
            upload(api, data)

    threading.Thread(target=send, daemon=True).start()

    def checking() -> str | None:
        for path in store.glob("*/job.json"):
            with contextlib.suppress(OSError, ValueError):
                if (json.loads(path.read_text()).get("lease") or {}).get("task") == "check":
                    return path.parent.name
        return None

    job_id = wait_until(checking, 120, "the check to start", every=0.05)
    time.sleep(0.5)  # into the data stages
    first.kill()
    record = json.loads((store / job_id / "job.json").read_text())
    assert record["state"] == "validating" and record["lease"]["task"] == "check", record
    assert list(work.glob(f"{job_id}/*.lock")), "the killed check left its scratch (and the test sees it)"

    second = service.api()  # the same machine comes back, with its consumer
    with client(second.url) as api:
        job = wait_for(api, job_id, {"ready", "rejected", "failed"}, timeout=120)
    assert job["state"] == "ready" and job["checks"] == 2, f"{job}\n{second.output()}"
    assert job["validation"]["accepted"] == 400
    assert (store / job_id / "requeues" / "check-000001").is_file()
    assert not [p for p in work.iterdir() if p.name != CACHE], sorted(work.rglob("*"))  # no scratch left


# ---------------------------------------------------------------- lost messages, dead processes' scratch


def test_a_queued_job_whose_message_was_lost_is_queued_again(make_service, dataset_zip):
    """Huey hands a message over before its task runs: a consumer killed in between loses it. The reaper finds the
    job waiting for a message that is no longer in the queue and queues it again."""
    from visapp.service.queue import TRAIN_TASK, JobQueue
    from visapp.service.settings import ServiceSettings
    from visapp.service.store import JobStore

    service = make_service()
    api_proc = service.api(worker=False)
    settings = ServiceSettings.from_env(api_proc.env)
    queue = JobQueue(settings, JobStore(settings.store_url))
    with client(api_proc.url) as api:
        job_id = uploaded(api, dataset_zip)
        assert api.post(f"/train-async/{job_id}", json=TINY_TRAINING).status_code == 202
        assert queue.waiting() == {(TRAIN_TASK, job_id, 1)}
        queue.huey.flush()  # the message is gone, as if a consumer took it and died
        assert queue.waiting() == set()
        wait_until(lambda: queue.waiting() == {(TRAIN_TASK, job_id, 1)}, 30, "the reaper to queue it again")
        assert job_of(api, job_id)["state"] == "queued"
    assert "its training message was lost" in api_proc.output()


HOLD_SCRATCH = """
import os, sys, time
from pathlib import Path
from visapp.service.scratch import scratch
with scratch(Path(sys.argv[1]), sys.argv[2], "work") as folder:
    (folder / "data").write_text("x")
    print("ready", flush=True)
    if sys.argv[3] == "die":
        os._exit(9)  # killed: nothing of the block's cleanup runs
    time.sleep(600)
"""


def test_a_sweep_removes_the_scratch_of_a_dead_process_and_never_that_of_a_live_one(tmp_path):
    import subprocess
    import sys

    from visapp.service.scratch import sweep
    from visapp.service.store import new_job_id

    dead_job, live_job = new_job_id(), new_job_id()
    dead = subprocess.run([sys.executable, "-c", HOLD_SCRATCH, str(tmp_path), dead_job, "die"], capture_output=True)
    assert dead.returncode == 9 and (tmp_path / dead_job / "work" / "data").is_file()
    live = subprocess.Popen([sys.executable, "-c", HOLD_SCRATCH, str(tmp_path), live_job, "live"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert live.stdout.readline().strip() == "ready"
        assert sweep(tmp_path) == [tmp_path / dead_job / "work"]
        assert not (tmp_path / dead_job).exists() and (tmp_path / live_job / "work" / "data").is_file()
    finally:
        live.kill()
        live.wait()
    assert sweep(tmp_path) == [tmp_path / live_job / "work"] and not any(tmp_path.iterdir())
