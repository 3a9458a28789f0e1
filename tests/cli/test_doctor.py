"""`visapp doctor`: every check passes against a healthy set-up (moto S3 holding the DVC remote, an MLflow server,
Redis, a folder job store), and each fails with a line that says what to fix when its service is down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _cuda_available, free_port, run
from visapp import doctor
from visapp.registry import remote

pytestmark = pytest.mark.integration

ENVIRONMENT = [
    "python",
    "torch",
    "torchvision",
    "ultralytics",
    "dvc",
    "mlflow",
    "opencv-python-headless",
    "opencv headless",
    "cuda",
]


def run_doctor(cwd: Path, env: dict[str, str] | None = None, *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """`visapp doctor --json` in cwd: its exit status and {check: (verdict, detail)}."""
    proc = run(["visapp", "doctor", "--json", *args], cwd, check=False, env=env)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    names = [row["name"] for row in rows]
    assert names[-1] == "pipeline" and len(set(names)) == len(names), names  # every check has one row, in order
    return proc.returncode, {row["name"]: (row["verdict"], row["detail"]) for row in rows}


def healthy_env(tmp_path: Path, mlflow_server, redis_url: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "VISAPP_STORE_URL": (tmp_path / "jobs").as_uri(),
        "VISAPP_QUEUE_URL": redis_url,
    }


def test_every_check_passes_against_a_healthy_set_up(make_project, s3_server, mlflow_server, redis_url, tmp_path):
    project = make_project()
    s3_server.attach(project, "doctor-healthy")
    project.commit("the DVC remote")
    env = healthy_env(tmp_path, mlflow_server, redis_url)

    status, checks = run_doctor(project.root, env)

    assert status == 0, checks
    for name in [*ENVIRONMENT, "params", "dvc remote", "tracking", "job store", "job queue", "git"]:
        assert checks[name][0] == "ok", (name, checks[name])
    assert s3_server.endpoint in checks["dvc remote"][1] and "doctor-healthy" in checks["dvc remote"][1]
    assert checks["tracking"][1] == f"{mlflow_server.uri} answers /health"
    assert "RedisHuey" in checks["job queue"][1]
    assert checks["git"][1] == f"clean at main@{project.run('git', 'rev-parse', '--short=7', 'HEAD').stdout.strip()}"
    # No data yet: the pipeline is stale, a warning that names the fix, not a failure.
    assert checks["pipeline"][0] == "warn" and "`dvc repro`" in checks["pipeline"][1], checks["pipeline"]

    table = run(["visapp", "doctor"], project.root, env=env).stdout.splitlines()
    assert table[0].split() == ["check", "verdict", "detail"]
    assert any(line.split()[:3] == ["dvc", "remote", "ok"] for line in table), table
    assert table[-1].startswith(f"{len(checks) - 1} ok, 1 warn"), table


def test_each_service_down_fails_its_check_with_the_fix(make_project, own_s3_server, tmp_path):
    project = make_project()
    own_s3_server.attach(project, "doctor-down")
    project.commit("the DVC remote")
    own_s3_server.stop()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "VISAPP_QUEUE_URL": f"redis://:s3cret-password@127.0.0.1:{free_port()}/0",
        "VISAPP_STORE_URL": (blocker / "jobs").as_uri(),
    }

    started = time.monotonic()
    status, checks = run_doctor(project.root, env)

    assert status == 1
    assert time.monotonic() - started < 120  # refused connections fail fast: nothing waits for a time-out
    failing = {name for name, (verdict, _) in checks.items() if verdict == "FAIL"}
    assert failing == {"dvc remote", "tracking", "job queue", "job store"}, checks
    remote = checks["dvc remote"][1]
    assert f"is the S3 server at {own_s3_server.endpoint} running?" in remote, remote
    assert "start the server" in checks["tracking"][1] and env["MLFLOW_TRACKING_URI"] in checks["tracking"][1]
    queue = checks["job queue"][1]
    assert "is Redis running there" in queue and "Connection" in queue, queue
    assert "s3cret-password" not in json.dumps(checks), "a password in VISAPP_QUEUE_URL is shown"
    assert "can create and write" in checks["job store"][1], checks["job store"]


def test_an_optional_tracking_server_that_is_down_is_a_warning(make_project):
    project = make_project()
    project.set_params("tracking.required=false")
    project.commit("tracking optional")

    status, checks = run_doctor(project.root, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})

    assert status == 0, checks
    assert checks["tracking"][0] == "warn" and "is not reachable" in checks["tracking"][1], checks["tracking"]


def test_require_gpu_fails_without_a_cuda_device_and_says_what_to_do(tmp_path):
    status, checks = run_doctor(tmp_path, None, "--require-gpu")

    verdict, detail = checks["cuda"]
    if _cuda_available():
        assert (status, verdict) == (0, "ok") and "GiB" in detail, checks["cuda"]
    else:
        assert (status, verdict) == (1, "FAIL"), checks["cuda"]
        assert "--gpus all" in detail or "TORCH_VARIANT" in detail, detail


def test_require_gpu_with_cuda_hidden_fails_naming_what_hides_it(tmp_path):
    # What the train workflow runs first on its GPU runner: a runner whose GPU torch cannot use fails here.
    status, checks = run_doctor(tmp_path, {"CUDA_VISIBLE_DEVICES": ""}, "--require-gpu")

    verdict, detail = checks["cuda"]
    assert (status, verdict) == (1, "FAIL"), checks["cuda"]
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in detail or "CPU-only build" in detail, detail


def test_outside_a_project_the_project_checks_are_skipped_with_the_reason(tmp_path):
    """As in the image's /app without a mounted checkout: nothing fails for want of a repository."""
    status, checks = run_doctor(tmp_path)

    assert status == 0, checks
    for name in ("params", "dvc remote", "job store", "job queue", "git", "pipeline"):
        assert checks[name][0] == "skip" and checks[name][1], (name, checks[name])
    assert checks["tracking"][0] == "ok" and checks["tracking"][1].startswith("local store sqlite:///")


# --- the checks' own logic, without processes ---------------------------------------------------------------------


@pytest.mark.unit
def test_a_gui_opencv_wheel_fails_the_headless_check_with_the_commands_that_fix_it():
    versions = {"opencv-python": "4.12.0.88", "opencv-python-headless": "4.12.0.88"}
    check = doctor.opencv_check(versions.get)
    assert check.verdict == "FAIL"
    assert "pip uninstall -y opencv-python" in check.detail
    assert "pip install --force-reinstall --no-deps opencv-python-headless==4.12.0.88" in check.detail

    assert doctor.opencv_check({}.get).verdict == "FAIL"  # no OpenCV at all


@pytest.mark.unit
def test_a_missing_package_fails_with_the_install_command():
    checks = {c.name: c for c in doctor.package_checks({"torch": "2.14.1"}.get)}
    assert checks["torch"].verdict == "ok" and checks["torch"].detail == "2.14.1"
    assert checks["ultralytics"].verdict == "FAIL" and "make install" in checks["ultralytics"].detail


@pytest.mark.unit
def test_a_check_that_never_answers_fails_after_its_time_limit():
    started = time.monotonic()
    (check,) = doctor._bounded("slow", lambda: time.sleep(30), timeout=0.2)
    assert time.monotonic() - started < 5
    assert (check.name, check.verdict) == ("slow", "FAIL") and "no answer within 0.2 s" in check.detail


@pytest.mark.unit
def test_stale_stages_are_described_briefly():
    changes = [{"changed deps": {"data/raw": "modified", "src/a.py": "modified", "src/b.py": "deleted"}}, "always"]
    assert doctor._describe_stale("validate", changes) == "validate (data/raw modified, src/a.py modified and 2 more)"
    assert doctor._describe_stale("data/raw.dvc", []) == "data/raw.dvc"


@pytest.mark.unit
def test_passwords_in_urls_are_hidden():
    assert doctor._redact("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert doctor._redact("https://user:secret@mlflow.example/x") == "https://user:***@mlflow.example/x"
    assert doctor._redact("s3://bucket/prefix") == "s3://bucket/prefix"


def test_a_fresh_clones_placeholder_remote_is_a_warning_that_says_how_to_set_it(make_project):
    # The remote .dvc/config ships with: a fresh clone has nothing broken, only something to set.
    project = make_project()
    project.run("dvc", "remote", "add", "-d", "storage", remote.PLACEHOLDER_URL)
    project.commit("the placeholder remote")

    status, checks = run_doctor(project.root)

    verdict, detail = checks["dvc remote"]
    assert verdict == "warn", checks["dvc remote"]
    assert "placeholder" in detail and "dvc remote modify storage url s3://BUCKET/dvc" in detail, detail
    assert status == 0, checks


@pytest.mark.unit
def test_the_placeholder_is_the_remote_this_repository_ships_with():
    from configparser import ConfigParser

    config = ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    assert config["'remote \"storage\"'"]["url"] == remote.PLACEHOLDER_URL
    assert config["core"]["remote"] == "storage"
