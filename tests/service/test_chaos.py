"""Chaos, bounded: Redis, one API and two workers on loopback, 12 small jobs (uploads, half of them checked by the
workers, and trainings of half of them), while a driver SIGKILLs the API or a worker at random moments and
starts it again on the same machine (the same port, the same work folder); each of the three dies once in
the first half minute.

When the jobs drain (at most 5 minutes): every job, those whose answer a kill swallowed included, is in a
terminal state; each succeeded job's model downloads and loads; no training succeeded twice; no scratch folder
is left on any machine; no MLflow run is left RUNNING. The figures (kills, jobs, time to drain) are printed.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from factory import zip_folder
from service.conftest import TINY_TRAINING, client, upload
from service.test_uploads import CLASSES, sample
from visapp.service.scratch import CACHE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS, TRAINED = 12, 6
DRAIN_S = 300
TERMINAL = {"ready", "rejected", "succeeded", "failed", "cancelled"}
TRAINING_DONE = {"succeeded", "failed", "cancelled"}
TRAINING = {**TINY_TRAINING, "epochs": 2}


class Chaos(threading.Thread):
    """Kills the API or a worker (SIGKILL, the process group) and starts it again at once: each of the three once
    in the first half minute (5-10 s apart, so that a fast machine cannot drain the jobs before every kind of
    process has died once), then one every 15-25 s."""

    def __init__(self, service, api_port: int, works: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.service, self.api_port, self.works = service, api_port, works
        self.random = random.Random(0)
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.kills: list[tuple[float, str]] = []
        self.api = self.start_api()
        self.workers = {name: self.start_worker(name) for name in ("worker-a", "worker-b")}

    def start_api(self):
        return self.service.api(worker=False, port=self.api_port, extra={"VISAPP_WORK_DIR": str(self.works["api"])})

    def start_worker(self, name: str):
        return self.service.worker(extra={"VISAPP_WORK_DIR": str(self.works[name])})

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.wait(self.random.uniform(*((5, 10) if len(self.kills) < 3 else (15, 25)))):
            victim = ("api", "worker-a", "worker-b")[len(self.kills) % 3]  # each in turn, at random moments
            with self.lock:
                if victim == "api":
                    self.api.kill()
                    self.api = self.start_api()
                else:
                    self.workers[victim].kill()
                    self.workers[victim] = self.start_worker(victim)
            self.kills.append((round(time.monotonic() - started, 1), victim))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def test_jobs_drain_to_a_terminal_state_while_processes_are_killed(make_service, redis_queue, mlflow_server, tmp_path):
    small = zip_folder(sample(tmp_path / "small", images=12))
    large = zip_folder(sample(tmp_path / "large", images=16))
    service = make_service(
        queue_url=redis_queue,
        VISAPP_HEARTBEAT_S="2",
        VISAPP_STALE_AFTER_S="10",
        VISAPP_INLINE_LIMIT=str((len(small) + len(large)) // 2),  # the large uploads are checked by a worker
    )
    works = {name: tmp_path / f"work-{name}" for name in ("api", "worker-a", "worker-b")}
    port = free_port()
    chaos = Chaos(service, port, works)
    url = f"http://127.0.0.1:{port}"
    slots = [{"data": large if i % 2 else small, "train": i < TRAINED, "job": None, "asked": False}
             for i in range(JOBS)]  # fmt: skip
    started = time.monotonic()
    chaos.start()
    try:
        with client(url) as api:
            while time.monotonic() - started < DRAIN_S:
                done = 0
                for slot in slots:
                    with contextlib.suppress(httpx.HTTPError, ValueError):  # the API is down: the next round
                        done += _advance(api, slot)
                if done == len(slots):
                    break
                time.sleep(1)
        drained = time.monotonic() - started
    finally:
        chaos.stop()

    store = service.job_folder("x").parent
    found = {path.parent.name: json.loads(path.read_text()) for path in store.glob("*/job.json")}
    print(f"\nchaos: {len(chaos.kills)} kills {chaos.kills}; {len(found)} jobs ({JOBS} asked for); "
          f"drained in {drained:.0f} s")  # fmt: skip
    unfinished = {job_id: r["state"] for job_id, r in found.items() if r["state"] not in TERMINAL}
    assert not unfinished, f"{unfinished}\n{chaos.api.output()[-3000:]}"
    assert all(slot["job"] for slot in slots)
    trained = [found[slot["job"]] for slot in slots if slot["train"]]
    assert all(r["state"] in TRAINING_DONE for r in trained), [r["state"] for r in trained]
    assert {victim for _, victim in chaos.kills} == {"api", "worker-a", "worker-b"}, chaos.kills

    # No training succeeded twice; each succeeded job's model downloads and loads.
    from ultralytics import YOLO

    with client(url) as api:
        for record in found.values():
            succeeded = [a for a in record["attempts"] if a["state"] == "succeeded"]
            assert len(succeeded) <= 1 and record["training"] <= 1, record["attempts"]
            if record["state"] == "succeeded":
                weights = tmp_path / f"{record['id']}.pt"
                weights.write_bytes(api.get(f"/download/model/{record['id']}").content)
                assert list(YOLO(str(weights)).names.values()) == CLASSES.split(",")

    # No scratch is left on any machine, and no MLflow run of these jobs is left RUNNING.
    for name, work in works.items():
        left = [p for p in work.iterdir() if p.name != CACHE] if work.exists() else []
        assert not left, f"{name}: {sorted(work.rglob('*'))}"
    import mlflow

    tracking = mlflow.MlflowClient(mlflow_server.uri)
    runs = {a["mlflow_run_id"] for r in found.values() for a in r["attempts"] if a.get("mlflow_run_id")}
    statuses = {run_id: tracking.get_run(run_id).info.status for run_id in runs}
    assert "RUNNING" not in statuses.values(), statuses


def _advance(api: httpx.Client, slot: dict) -> bool:
    """One step of a slot's job (upload it, train it once it is ready); whether it is done."""
    if slot["job"] is None:
        answer = upload(api, slot["data"], classes=CLASSES)
        if answer.status_code < 500 and "job_id" in answer.json():
            slot["job"] = answer.json()["job_id"]
        return False
    job = api.get(f"/jobs/{slot['job']}").json()
    if not slot["train"]:
        return job["state"] in TERMINAL
    slot["asked"] = slot["asked"] or job["training"] >= 1  # also when the answer to the request was lost
    if not slot["asked"] and job["state"] == "ready":
        slot["asked"] = api.post(f"/train-async/{slot['job']}", json=TRAINING).status_code == 202
        return False
    return (slot["asked"] and job["state"] in TRAINING_DONE) or job["state"] in {"rejected", "failed"}
