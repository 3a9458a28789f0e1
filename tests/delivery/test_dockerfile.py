"""The Dockerfile: linted by hadolint, its install steps the same recipe `make install` runs, its build context only
what it copies, and its HEALTHCHECK script against a real `visapp serve`.

No container engine runs here. The install steps run outside Docker every time `make install` does (both call
scripts/install.sh), so what these tests pin is that the two stay one recipe.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, VENV_BIN, free_port

pytestmark = pytest.mark.integration

DOCKERFILE = REPO_ROOT / "Dockerfile"
HEALTHCHECK = REPO_ROOT / "scripts" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_hadolint_passes_with_the_projects_rules():
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_installs_with_the_recipe_of_make_install():
    runs = [args for keyword, args in instructions() if keyword == "RUN" and "install.sh" in args]
    commands = [shlex.split(args.split(" ", 1)[1] if args.startswith("--mount") else args) for args in runs]
    assert commands == [
        ["bash", "scripts/install.sh", "/opt/venv/bin/python"],  # torch alone: the cached layer
        ["bash", "scripts/install.sh", "/opt/venv/bin/python", "--dependencies-of", "pyproject.toml"],
        ["bash", "scripts/install.sh", "/opt/venv/bin/python", "--no-deps", "-e", "."],
    ]
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "bash scripts/install.sh $(PY) -e '.[dev]'" in makefile


def test_a_code_change_reinstalls_only_the_package():
    # The build stage's layers in the order they change: torch, the dependencies, then the code.
    build = instructions()[: next(i for i, (kw, args) in enumerate(instructions()) if kw == "FROM" and i > 1)]
    order = [f"{kw} {args}" for kw, args in build if kw in ("COPY", "RUN")]
    position = {what: next(i for i, line in enumerate(order) if what in line)
                for what in ("COPY scripts/install.sh", "install.sh /opt/venv/bin/python", "COPY pyproject.toml",
                             "--dependencies-of", "COPY src/", "--no-deps -e .")}  # fmt: skip
    assert list(position) == sorted(position, key=position.get), order
    # TORCH_INDEX_URL is a build argument (empty: pip's index), never an ENV fixed in the image
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}") in instructions()
    assert not any(kw == "ENV" and "TORCH_INDEX_URL" in args for kw, args in instructions())


def test_the_install_recipe_without_packages_stops_after_torch(tmp_path):
    # The Dockerfile's first install layer: the recipe given only a python installs torch and nothing else. A
    # stand-in python records what pip was asked.
    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    result = subprocess.run(
        ["bash", "scripts/install.sh", str(fake)], cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True
    )
    lines = calls.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "-m pip install --quiet --upgrade pip"
    assert lines[1].startswith(
        "-m pip install --progress-bar on --index-url https://download.pytorch.org/whl/cpu torch=="
    )
    assert len(lines) == 2
    steps = [line for line in result.stderr.splitlines() if line.startswith("install.sh [")]
    assert len(steps) == 2 and "torch==" in steps[1], result.stderr  # a line per step: the install shows it is alive


def dockerignore_admits(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (its last matching rule wins, as Docker's)."""
    admitted = True
    for rule in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern.removeprefix("**/")) for prefix in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            admitted = negated
    return admitted


def test_every_file_copied_is_in_the_build_context_and_nothing_else_of_note_is():
    copied = []
    for keyword, args in instructions():
        if keyword == "COPY" and "--from=" not in args:
            copied += args.split()[:-1]
    assert copied, "no COPY found"
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
        assert dockerignore_admits(source.rstrip("/")), f"COPY {source}: left out of the context by .dockerignore"
    for kept_out in ("data/raw", "models/yolo/best.pt", ".venv/bin/python", ".git/HEAD", ".dvc/config.local",
                     ".env", "mlflow.db", ".visapp/jobs", "src/visapp/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert not dockerignore_admits(kept_out), f"{kept_out} would reach the build context"


def fake_proc(root: Path, processes: dict[int, tuple[list[str], str]]) -> Path:
    """A /proc with these processes, {pid: (argv, mount namespace)}; the check itself is in namespace "mnt:[1]"."""
    proc = root / "proc"
    for pid, (argv, namespace) in {**processes, "self": (["python", "healthcheck.py"], "mnt:[1]")}.items():
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "ns" / "mnt").symlink_to(namespace)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(part.encode() for part in argv) + b"\0")
    return proc


def run_healthcheck(tmp_path: Path, processes: dict[int, tuple[list[str], str]]) -> subprocess.CompletedProcess:
    proc = fake_proc(tmp_path / f"case{len(list(tmp_path.glob('case*')))}", processes)
    code = f"import runpy, sys; from pathlib import Path; sys.exit(runpy.run_path({str(HEALTHCHECK)!r})['main'](Path({str(proc)!r})))"  # noqa: E501
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)


def test_the_healthcheck_asks_a_real_visapp_serve_on_its_port_wherever_it_runs_in_the_container(tmp_path):
    port = str(free_port())
    env = {
        **os.environ,
        "VISAPP_API_TOKEN": "",
        "VISAPP_STORE_URL": (tmp_path / "jobs").as_uri(),
        "VISAPP_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
        "VISAPP_WORK_DIR": str(tmp_path / "work"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "visapp"), "serve", "--open", "--no-worker", "--port", port],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    serve = ["/opt/venv/bin/python", "/opt/venv/bin/visapp", "serve", "--host", "0.0.0.0", "--port", port]
    # PID 1 is an init (`docker run --init`), the server its child; another container's server, on a port where
    # nothing answers, shares the PID namespace but not the mount namespace: it is not this container's.
    container = {
        1: (["/sbin/docker-init", "--", "visapp", "serve", f"--port={port}"], "mnt:[1]"),
        7: (serve, "mnt:[1]"),
        9: (["visapp", "serve", "--port", str(free_port())], "mnt:[2]"),
    }
    try:
        deadline = time.monotonic() + 60
        while (healthy := run_healthcheck(tmp_path, container)).returncode != 0:
            assert server.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            assert time.monotonic() < deadline, f"no healthy answer in 60 s: {healthy.stderr}"
            time.sleep(0.5)
        # A shell as PID 1 in front of the server: the same answer.
        assert (
            run_healthcheck(tmp_path, {1: (["sh", "-c", "visapp serve"], "mnt:[1]"), 5: (serve, "mnt:[1]")}).returncode
            == 0
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    down = run_healthcheck(tmp_path, container)
    assert down.returncode == 1 and f"127.0.0.1:{port}/health" in down.stderr


def test_the_healthcheck_of_a_worker_or_a_pipeline_is_its_process_running(tmp_path):
    assert run_healthcheck(tmp_path, {1: (["/opt/venv/bin/visapp", "worker"], "mnt:[1]")}).returncode == 0
    assert run_healthcheck(tmp_path, {1: (["dvc", "repro"], "mnt:[1]")}).returncode == 0
    # `serve` as some other program's argument is not the server.
    assert run_healthcheck(tmp_path, {1: (["grep", "visapp-serve", "serve"], "mnt:[1]")}).returncode == 0


def test_the_suite_runs_in_an_environment_the_images_recipe_made(tmp_path):
    # The image's install steps, run outside Docker: `make install` made this environment with scripts/install.sh,
    # the file the Dockerfile runs (install.sh records its own hash and arguments). Everything else in the suite
    # (the pipeline trained for an epoch, the service, doctor's checks against live servers) runs in it; here,
    # doctor's verdict on the environment itself.
    record = Path(sys.prefix) / "visapp-install.txt"
    assert record.is_file(), f"{sys.prefix} was not made by scripts/install.sh: run `make install`"
    recipe, _, args = record.read_text(encoding="utf-8").strip().partition(" ")
    assert recipe == hashlib.sha256((REPO_ROOT / "scripts" / "install.sh").read_bytes()).hexdigest(), (
        "scripts/install.sh changed since this environment was made: run `make install`"
    )
    assert args.startswith("-e "), args
    doctor = subprocess.run(
        [str(VENV_BIN / "visapp"), "doctor", "--json"], cwd=tmp_path, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    verdicts = {check["name"]: check["verdict"] for check in json.loads(doctor.stdout)}
    environment = ["python", "torch", "torchvision", "ultralytics", "dvc", "mlflow", "opencv headless", "cuda"]
    assert {name: verdicts.get(name) for name in environment} == dict.fromkeys(environment, "ok"), doctor.stdout
