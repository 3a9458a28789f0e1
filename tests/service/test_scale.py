"""Scaling out, with real processes: `visapp worker`s sharing one Redis queue, API processes sharing one store."""

from __future__ import annotations

import pytest

from service.conftest import OTHER_TOKEN, TINY_TRAINING, client, upload, wait_for

pytestmark = pytest.mark.integration


def uploaded(api, data: bytes) -> str:
    answer = upload(api, data)
    assert answer.status_code == 201, answer.text
    return answer.json()["job"]["id"]


@pytest.mark.slow
def test_two_workers_on_one_redis_queue_share_the_trainings_each_run_once(make_service, redis_queue, dataset_zip):
    # A lease is stale after 30 s here, not 4: this test is about sharing, and a busy machine must not make a
    # slow heartbeat look like a dead worker (that is test_faults' business).
    service = make_service(queue_url=redis_queue, VISAPP_STALE_AFTER_S="30")
    workers = [service.worker(), service.worker()]  # they start while the API does
    api_proc = service.api(worker=False)
    with client(api_proc.url) as api:
        ids = [uploaded(api, dataset_zip) for _ in range(4)]
        for worker in workers:
            worker.wait_ready()
        for job_id in ids:
            queued = api.post(f"/train-async/{job_id}", json=TINY_TRAINING)
            assert queued.status_code == 202 and queued.json()["attempt"] == 1, queued.text
        done = {job_id: wait_for(api, job_id, {"succeeded", "failed", "cancelled"}, timeout=600) for job_id in ids}
    logs = "\n".join(worker.output() for worker in workers)
    assert {job["state"] for job in done.values()} == {"succeeded"}, f"{done}\n{logs}"
    assert all(job["attempt"] == 1 and job["progress"]["epoch"] == 1 for job in done.values()), done

    pids = {worker.proc.pid: worker for worker in workers}
    ran_by: dict[str, int] = {}
    for job_id in ids:
        folder = service.job_folder(job_id)
        leases = sorted(path.name for path in (folder / "leases").glob("train-*"))
        assert leases == ["train-000001"], f"job {job_id}: leases {leases}"  # one attempt, taken once
        assert not (folder / "requeues").exists(), f"job {job_id} was taken for dead and queued again"
        ran_by[job_id] = int((folder / "leases" / "train-000001").read_text().split(":")[1])
        # ... and run by that worker alone: only its log reports the job's epoch.
        reported = {pid: worker.epochs_reported(job_id) for pid, worker in pids.items()}
        assert reported == {pid: [1] if pid == ran_by[job_id] else [] for pid in pids}, reported
    assert set(ran_by.values()) == set(pids), f"one worker ran every job: {ran_by}"


def test_two_api_processes_on_one_store_see_the_same_jobs(make_service, dataset_zip):
    service = make_service(VISAPP_STALE_AFTER_S="30")
    first, second = service.api(worker=False), service.api(worker=False)
    with client(first.url) as one, client(second.url) as two:
        made_by_one = uploaded(one, dataset_zip)
        job = two.get(f"/jobs/{made_by_one}")
        assert job.status_code == 200 and job.json()["state"] == "ready", job.text
        assert job.json() == one.get(f"/jobs/{made_by_one}").json()
        assert [j["id"] for j in two.get("/jobs").json()["jobs"]] == [made_by_one]

        made_by_two = uploaded(two, dataset_zip)
        # A change made through one process shows through the other at once: no cache in either.
        queued = one.post(f"/train-async/{made_by_two}", json=TINY_TRAINING)
        assert queued.status_code == 202, queued.text
        assert two.get(f"/jobs/{made_by_two}").json()["state"] == "queued"
        assert two.post(f"/jobs/{made_by_two}/cancel").json()["state"] == "cancelled"
        assert one.get(f"/jobs/{made_by_two}").json()["state"] == "cancelled"
        for api in (one, two):
            listed = [(j["id"], j["state"]) for j in api.get("/jobs").json()["jobs"]]
            assert listed == [(made_by_one, "ready"), (made_by_two, "cancelled")]
            assert api.get(f"/dataset/metadata/{made_by_one}").status_code == 200
        # Each process keeps another token's jobs from a caller alike.
        with client(second.url, OTHER_TOKEN) as stranger:
            assert stranger.get(f"/jobs/{made_by_one}").status_code == 404
            assert stranger.get("/jobs").json()["jobs"] == []
