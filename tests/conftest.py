"""Shared fixtures: an offline environment, and throw-away copies of this repository driven by real git + DVC."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # dvc, visapp, yolo, mlflow of the environment running the tests
# What a project needs to run its pipeline: the stage scripts and the library are stage dependencies.
PROJECT_FILES = ["conf", "stages", "src", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml"]


# --- tiers ------------------------------------------------------------------------------------------------------

TIERS = ("unit", "integration", "slow")


def tier(item: pytest.Item) -> str | None:
    """The closest tier marker of a test: its own, else its class's, else its module's `pytestmark`."""
    return next((mark.name for mark in item.iter_markers() if mark.name in TIERS), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    untiered = [item.nodeid for item in items if tier(item) is None]
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker (unit, integration or slow): {untiered[:5]}")
    for item in items:
        if tier(item) in ("integration", "slow"):
            # A module's `unit` default still shows to `-m`: `-m "unit and not integration"` leaves these out.
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("gpu") and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none is visible here"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A unit test needs nothing but Python: starting git, DVC, a server or any other process fails it."""
    if tier(request.node) != "unit":
        yield
        return

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"a unit test started a process ({args[1] if len(args) > 1 else kwargs}): mark it integration"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory: pytest.TempPathFactory):
    """No network, no GUI, a private Ultralytics settings folder, a git identity, the venv's tools first."""
    mp = pytest.MonkeyPatch()
    mp.setenv("YOLO_OFFLINE", "true")
    mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
    mp.setenv("MPLBACKEND", "Agg")
    mp.setenv("DVC_NO_ANALYTICS", "1")
    mp.setenv("GIT_AUTHOR_NAME", "VIS tests")
    mp.setenv("GIT_AUTHOR_EMAIL", "tests@vis.invalid")
    mp.setenv("GIT_COMMITTER_NAME", "VIS tests")
    mp.setenv("GIT_COMMITTER_EMAIL", "tests@vis.invalid")
    mp.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("DVC_EXP_NAME", raising=False)
    yield
    mp.undo()


def run(
    cmd: list[str],
    cwd: Path,
    check: bool = True,
    env: dict | None = None,
    timeout: float = 600,
    input: str | None = None,
):
    """Run a command, capture its output, and fail the test with that output when it fails unexpectedly."""
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, input=input
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def tree_digest(
    root: Path, names: tuple[str, ...] = (".",), skip: tuple[str, ...] = (".git", ".dvc/tmp")
) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root/NAME for each name (a link: of its target
    path), except under `skip` (git's and DVC's own bookkeeping): a workspace or an output as it is."""
    digest = {}
    for name in names:
        top = root / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_dir() or any(rel == s or rel.startswith(f"{s}/") for s in skip):
                continue
            data = str(path.readlink()).encode() if path.is_symlink() else path.read_bytes()
            digest[rel] = hashlib.sha256(data).hexdigest()
    return digest


@dataclass
class Project:
    """A copy of this repository in a temporary folder: its own git repo, DVC repo and data."""

    root: Path

    def run(
        self, *cmd: str, check: bool = True, env: dict | None = None, timeout: float = 600, input: str | None = None
    ):
        return run(list(cmd), self.root, check=check, env=env, timeout=timeout, input=input)

    def set_params(self, *overrides: str) -> None:
        """Set params (`data.on_error=skip`) in conf/ and params.yaml alike, as `dvc exp apply` + `visapp params sync`
        would: the pipeline's params stage refuses a params.yaml that conf/ does not give."""
        from omegaconf import OmegaConf

        path = self.root / "params.yaml"
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
        path.write_text(OmegaConf.to_yaml(merged))
        self.run("visapp", "params", "sync")

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)


def _copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in PROJECT_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


HYDRA = {"enabled": "true", "config_dir": "conf", "config_name": "config"}


def dvc_init(project: Project, **sections: dict[str, str]) -> None:
    """`dvc init`, then the settings written into .dvc/config at once, as `dvc config` would write them (a
    `dvc config` call per key costs a second of DVC's start-up)."""
    project.run("dvc", "init", "-q")
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"    {key} = {value}" for key, value in values.items())]
    with (project.root / ".dvc" / "config").open("a", encoding="utf-8") as config:
        config.write("\n".join(lines) + "\n")


@pytest.fixture
def make_project(tmp_path: Path):
    """Factory: a git + DVC repository holding this project's pipeline, committed, with no data yet."""

    def factory(name: str = "project") -> Project:
        root = tmp_path / name
        root.mkdir()
        _copy_project(root)
        project = Project(root)
        project.run("git", "init", "-q", "-b", "main")
        dvc_init(project, core={"analytics": "false", "autostage": "true"}, hydra=HYDRA)
        project.commit("project")
        return project

    return factory


# --- servers on loopback ------------------------------------------------------------------------------------------


def wait_until_serving(
    proc: subprocess.Popen,
    probe: Callable[[], bool],
    timeout: float,
    failure: str | Callable[[], str],
    stop: Callable[[], None] | None = None,
    every: float = 0.2,
) -> None:
    """Poll a server just started until `probe()` says it answers; fail the test (`failure` says what and where
    to look), stopping the server (`stop`, else killing `proc`), when `proc` exits or `timeout` s pass first.

    A probe that raises counts as "not yet": each client says "not listening" with its own exception.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            (stop or proc.kill)()
            pytest.fail(failure() if callable(failure) else failure)
        time.sleep(every)


def answers(url: str) -> bool:
    """Whether an HTTP GET of `url` answers 200 (urllib raises for other statuses, and when nothing listens)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


# --- S3: moto's server mode on loopback, a real S3 endpoint for DVC (as DVC's own tests use) ---------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A `moto_server` subprocess: an S3 endpoint on 127.0.0.1 that a test can stop."""

    endpoint: str
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=name)

    def attach(self, project: Project, bucket: str, prefix: str = "dvc") -> str:
        """Create `bucket` and make it the project's default remote `storage`, as a user would (README)."""
        self.create_bucket(bucket)
        url = f"s3://{bucket}/{prefix}"
        project.run("dvc", "remote", "add", "-f", "-d", "storage", url)
        project.run("dvc", "remote", "modify", "--local", "storage", "endpointurl", self.endpoint)
        return url


def start_s3_server(log_dir: Path) -> S3Server:
    port = free_port()
    log = (log_dir / f"moto-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_serving(
        proc, lambda: answers(f"{endpoint}/moto-api/"), 60, f"moto_server did not start on {endpoint}: see {log.name}"
    )
    return S3Server(endpoint, proc)


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory):
    """Fake credentials (moto accepts any) and empty ~/.aws files: nothing can reach a real account."""
    aws_files = tmp_path_factory.mktemp("aws")
    for name in ("config", "credentials"):
        (aws_files / name).write_text("")
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_CONFIG_FILE", str(aws_files / "config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_files / "credentials"))
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    # botocore retries a refused connection with back-off (~10 s a call); one attempt keeps the
    # "server stopped" tests quick and changes nothing while the server answers.
    mp.setenv("AWS_MAX_ATTEMPTS", "1")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def s3_server(s3_env, tmp_path_factory: pytest.TempPathFactory):
    """One moto S3 server for the session; tests use their own bucket (S3Server.attach)."""
    server = start_s3_server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def own_s3_server(s3_env, tmp_path: Path):
    """A moto S3 server for one test, which the test may stop."""
    server = start_s3_server(tmp_path)
    yield server
    server.stop()


# --- MLflow: a real tracking server on loopback (SQLite backend, proxied artifacts) -----------------------------


@dataclass
class MlflowServer:
    """An `mlflow server` subprocess on 127.0.0.1; `uri` is its tracking URI."""

    uri: str
    proc: subprocess.Popen

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the CLI and the uvicorn server it started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def start_mlflow_server(base: Path) -> MlflowServer:
    port = free_port()
    log = (base / f"mlflow-{port}.log").open("wb")
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(base / "artifacts"), "--serve-artifacts"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # Without MLflow's job runner (seven Huey consumers, ~1.5 GB): the tests log runs, they run no MLflow jobs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Its own process group, so that stop() reaches the server processes it starts.
    proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_until_serving(
        proc, lambda: answers(f"{uri}/health"), 120, f"mlflow server did not start on {uri}: see {log.name}"
    )
    return MlflowServer(uri, proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One MLflow tracking server for the session (tests keep apart by experiment name or by run ids)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


# --- Redis: a real redis-server on loopback (the service's shared queue; `visapp doctor` checks it) ------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the session (`make test` installs it)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=(folder / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    import redis

    wait_until_serving(proc, lambda: bool(redis.Redis(port=port).ping()), 30, "redis-server did not start", every=0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=30)


# --- validation: what a run really did ---------------------------------------------------------------------------


@pytest.fixture
def validation_work(monkeypatch):
    """What each validation really did: the samples it checked (by their image, else annotation) and the files
    it read; the per-sample work runs in this process (fewer samples than a pool needs)."""
    from visapp.dataset import sample_pool

    done: dict[str, list[str]] = {"checked": [], "read": []}
    evaluate, read = sample_pool.evaluate_sample, sample_pool.read_with_signature

    def checking(raw_dir, files, *args, **kwargs):
        done["checked"].append(files.image or files.annotation)
        return evaluate(raw_dir, files, *args, **kwargs)

    def reading(raw_dir, rel):
        done["read"].append(rel)
        return read(raw_dir, rel)

    monkeypatch.setattr(sample_pool, "evaluate_sample", checking)
    monkeypatch.setattr(sample_pool, "read_with_signature", reading)

    def since_last() -> dict[str, list[str]]:
        found = {key: sorted(value) for key, value in done.items()}
        done["checked"].clear()
        done["read"].clear()
        return found

    return since_last
