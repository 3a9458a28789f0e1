"""Fixtures of the service tests: real processes on loopback (uvicorn through `visapp serve`, `visapp worker`,
`redis-server`, moto's S3 server, an MLflow server), a tiny dataset as a ZIP, and an HTTP client with a token.

Timing knobs are small here (a heartbeat of 1 s, a lease stale after 10 s) so that the faults play out in
seconds; the defaults are 10 s and 60 s.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import VENV_BIN, answers, free_port, wait_until_serving
from factory import zip_folder

TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "other-token-0123456789abcdef"
FAST = {"VISAPP_HEARTBEAT_S": "1", "VISAPP_STALE_AFTER_S": "10"}
# Ultralytics' plots are most of a tiny training's time; no service test looks at them.
TINY_TRAINING = {"epochs": 1, "imgsz": 64, "batch": 3, "workers": 0, "device": "cpu", "extra": {"plots": False}}


@dataclass
class Proc:
    """A `visapp serve` or `visapp worker` subprocess, with its log."""

    proc: subprocess.Popen
    log: Path
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its training subprocess): a machine that died."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until a `visapp worker` consumes its queue (it says so in its log)."""
        wait_until(lambda: "visapp worker:" in self.output(), timeout, f"the worker to start:\n{self.output()}")

    def epochs_reported(self, job_id: str) -> list[int]:
        """The epochs this worker reported for a job (its log's `job <id>: epoch n/N` lines), in order."""
        return [int(n) for n in re.findall(rf"job {re.escape(job_id)}: epoch (\d+)/", self.output())]


@dataclass
class Service:
    """A store, a queue and the processes that share them; `api()` / `worker()` start more."""

    base: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    cwd: Path | None = None  # the repository the service runs from (for /models); default: base

    def _start(self, args: list[str], name: str, extra: dict[str, str] | None = None) -> Proc:
        log = self.base / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, **self.env, **(extra or {})}
        env.setdefault("VISAPP_WORK_DIR", str(self.base / f"work-{name}-{len(self.procs)}"))
        handle = log.open("wb")
        proc = subprocess.Popen(
            [str(VENV_BIN / "visapp"), *args],
            cwd=self.cwd or self.base,  # conf/ comes from this checkout when the folder has none
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() and kill() reach the process group: a worker and its trainer
        )
        started = Proc(proc, log, env=env)
        self.procs.append(started)
        return started

    def api(self, worker: bool = True, extra: dict[str, str] | None = None, port: int | None = None) -> Proc:
        """`visapp serve` (with its own consumer unless `worker=False`), answering /health; on `port` when given
        (a restart on the same address), else on a free one."""
        port = port or free_port()
        args = ["serve", "--port", str(port)] + ([] if worker else ["--no-worker"])
        started = self._start(args, "api", extra)
        started.url = f"http://127.0.0.1:{port}"
        wait_until_serving(started.proc, lambda: answers(f"{started.url}/health"), 60,
                           lambda: f"visapp serve did not start:\n{started.output()}", stop=started.kill)  # fmt: skip
        return started

    def worker(self, extra: dict[str, str] | None = None) -> Proc:
        return self._start(["worker"], "worker", extra)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def job_folder(self, job_id: str) -> Path:
        """The job's folder in a folder store (the default store of `make_service`)."""
        url = self.env["VISAPP_STORE_URL"]
        assert url.startswith("file://"), f"not a folder store: {url}"
        return Path(url.removeprefix("file://")) / job_id


def wait_until(condition, timeout: float, what: str, every: float = 0.25):
    """Poll `condition()` until it is truthy; its value. Fails the test after `timeout` s, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(every)


def client(url: str, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def csrf_of(html: str) -> str:
    """The CSRF token of a page's first form."""
    return html.split('name="csrf" value="')[1].split('"')[0]


@contextlib.contextmanager
def signed_in(url: str, token: str = TOKEN) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the pages with `token` (their session cookie, as a browser holds it)."""
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as pages:
        csrf = csrf_of(pages.get("/ui/sign-in").text)
        answer = pages.post("/ui/sign-in", data={"token": token, "csrf": csrf, "next": "/ui/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/", answer.text
        yield pages


def wait_for(api: httpx.Client, job_id: str, states: set[str], timeout: float = 300) -> dict:
    """Poll GET /jobs/{id} until the job is in one of `states`; the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job.get("state") in states:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stayed {job.get('state')} for {timeout} s: {job}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The built-in sample's first 12 images as a VOC ZIP (in memory: a few hundred KB)."""
    folder = tmp_path_factory.mktemp("tiny") / "voc"
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(folder), "--images", "12"], check=True,
                   capture_output=True)  # fmt: skip
    return zip_folder(folder)


def upload(api: httpx.Client, data: bytes, classes: str | None = "circle,square,triangle", name: str = "ds.zip"):
    fields = {"classes": classes} if classes is not None else {}
    return api.post("/upload-dataset", files={"file": (name, data, "application/zip")}, data=fields)


_REDIS_DBS = itertools.cycle(range(1, 16))  # db 0 is the fixture's own URL; tests run one at a time


@pytest.fixture
def redis_queue(redis_url: str) -> Iterator[str]:
    """A queue URL on the session's Redis with a database of this test's own, emptied before and after: no test
    sees another's messages."""
    import redis

    url = f"{redis_url.rsplit('/', 1)[0]}/{next(_REDIS_DBS)}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    yield url
    connection.flushdb()
    connection.close()


@pytest.fixture
def make_service(tmp_path: Path, mlflow_server) -> Iterator:
    """Factory: a Service over a fresh store (a folder by default), training into the session's MLflow server."""
    made: list[Service] = []

    def factory(store_url: str | None = None, queue_url: str | None = None, **extra: str) -> Service:
        base = tmp_path / f"service-{len(made)}"
        base.mkdir()
        env = {
            "VISAPP_API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "VISAPP_STORE_URL": store_url or (base / "jobs").as_uri(),
            "VISAPP_QUEUE_URL": queue_url or f"sqlite:///{base / 'queue.db'}",
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            **FAST,
            **extra,
        }
        service = Service(base, env)
        made.append(service)
        return service

    yield factory
    for service in made:
        service.stop()
