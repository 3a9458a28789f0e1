"""deploy/rollout.sh against a stand-in container runtime: a fake `docker` (and `aws`) on PATH, and a loopback
HTTP server that answers /health for whichever fake container publishes its port, as the real one would.

Images are named by digest; the digest says how the fake container behaves: GOOD answers {"ok": true} and serves
the model version its environment names (VISAPP_MODEL_VERSION, as the service is to do: `"model": {"version": ...}`,
null without one), BAD answers {"ok": false} (the API's answer when its store or queue is unreachable), STALE
answers {"ok": true} but serves another version than the one promoted, CRASH exits at start.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.integration

ROLLOUT = REPO_ROOT / "deploy" / "rollout.sh"
REGISTRY = "registry.invalid/vis/visapp"
GOOD, BAD, CRASH, OLD, STALE = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
HEALTHY_DIGESTS = {GOOD, OLD, STALE}

# The fake runtime: containers in a JSON file, every call appended to a log. It implements exactly the
# subcommands and options rollout.sh uses, and refuses anything else (so the script cannot drift unnoticed).
FAKE_DOCKER = r"""
import json, os, sys

STATE, LOG = os.environ["FAKE_DOCKER_STATE"], os.environ["FAKE_DOCKER_LOG"]
CRASH = "c" * 64


def load():
    with open(STATE) as f:
        return json.load(f)


def save(state):
    with open(STATE, "w") as f:
        json.dump(state, f)


def fail(message, code=1):
    sys.stderr.write(f"Error response from daemon: {message}\n")
    sys.exit(code)


args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps(args) + "\n")
state = load()
containers = state["containers"]
command, rest = args[0], args[1:]


def container(name):
    if name not in containers:
        fail(f"No such container: {name}")
    return containers[name]


if command == "login":
    assert rest[:3] == ["--username", "AWS", "--password-stdin"] and len(rest) == 4, rest
    state["logins"].append({"registry": rest[3], "password": sys.stdin.read().strip()})
    save(state)
    print("Login Succeeded")
elif command == "pull":
    image = [a for a in rest if not a.startswith("-")][0]
    if "@sha256:" not in image:
        fail(f"pull {image}: not by digest")
    state["pulled"].append(image)
    save(state)
elif command == "inspect":
    fmt = None
    names = []
    it = iter(rest)
    for a in it:
        if a == "--type":
            assert next(it) == "container"
        elif a == "--format":
            fmt = next(it)
        else:
            names.append(a)
    c = container(names[0])
    if fmt is None:
        print(json.dumps([c]))
    else:
        out = fmt.replace("{{.State.Running}}", "true" if c["running"] else "false")
        out = out.replace("{{.RestartCount}}", str(c["restarts"]))
        assert "{{" not in out, f"unsupported format: {fmt}"
        print(out)
elif command == "stop":
    name = rest[-1]
    assert rest[:-1] in ([], ["--time", "30"]), rest
    container(name)["running"] = False
    save(state)
elif command == "start":
    c = container(rest[0])
    c["running"] = c["image"].rsplit(":", 1)[-1] != CRASH
    save(state)
elif command == "rename":
    old, new = rest
    if new in containers:
        fail(f"Conflict. The container name {new} is already in use")
    container(old)
    containers[new] = containers.pop(old)
    containers[new]["name"] = new
    save(state)
elif command == "rm":
    name = rest[-1]
    c = container(name)
    if c["running"] and "--force" not in rest:
        fail(f"cannot remove container {name}: container is running")
    del containers[name]
    state["removed"].append(c)
    save(state)
elif command == "logs":
    print(f"(logs of {rest[-1]})")
elif command == "ps":
    for name, c in containers.items():
        if c["running"] or "-a" in rest:
            print(name)
elif command == "run":
    opts = {"--name": None, "--restart": None, "--env-file": None, "--publish": None, "--gpus": None,
            "--shm-size": None}
    labels, flags = [], []
    i = 0
    while rest[i].startswith("-"):
        a = rest[i]
        if a == "--detach":
            flags.append(a)
            i += 1
        elif a == "--label":
            labels.append(rest[i + 1])
            i += 2
        elif a in opts:
            opts[a] = rest[i + 1]
            i += 2
        else:
            fail(f"fake docker: unsupported option {a}", 125)
    image, cmd = rest[i], rest[i + 1:]
    name = opts["--name"]
    if name in containers:
        fail(f"Conflict. The container name {name} is already in use", 125)
    port = opts["--publish"].split(":")[0] if opts["--publish"] else None
    for other in containers.values():
        if port and other["running"] and other["port"] == port:
            fail(f"Bind for 0.0.0.0:{port} failed: port is already allocated", 125)
    env = {}
    if opts["--env-file"]:
        with open(opts["--env-file"]) as f:
            env = dict(line.rstrip("\n").split("=", 1) for line in f if line.strip())
    crash = image.rsplit(":", 1)[-1] == CRASH
    containers[name] = {
        "name": name, "image": image, "command": cmd, "port": port, "env": env, "labels": labels,
        "restart": opts["--restart"], "gpus": opts["--gpus"], "shm_size": opts["--shm-size"],
        "detach": "--detach" in flags,
        "running": not crash, "restarts": 1 if crash else 0,
    }
    save(state)
    print("0123abcd" * 8)
else:
    fail(f"fake docker: unsupported command {command}", 125)
"""

FAKE_AWS = r"""
import json, os, sys

with open(os.environ["FAKE_AWS_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:3] == ["ecr", "get-login-password"]:
    print("fake-ecr-password")
elif sys.argv[1:3] == ["ssm", "get-parameters-by-path"]:
    print("/visapp/prod/VISAPP_QUEUE_URL\tredis://queue.invalid:6379/0")
    print("/visapp/prod/VISAPP_API_TOKEN\ts3cr3t-value")
else:
    sys.stderr.write(f"fake aws: unsupported {sys.argv[1:]}\n")
    sys.exit(2)
"""


@dataclass
class Runtime:
    """The fake runtime's files, the health server's port, and a way to run rollout.sh against them."""

    root: Path
    port: int

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def calls(self, log: str = "docker.log") -> list[list[str]]:
        path = self.root / log
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def existing(self, name: str, digest: str, running: bool = True, port: str | None = None) -> None:
        state = self.state()
        state["containers"][name] = {
            "name": name,
            "image": f"{REGISTRY}@sha256:{digest}",
            "command": [],
            "port": port,
            "env": {},
            "labels": [],
            "running": running,
            "restarts": 0,
        }
        self.state_file.write_text(json.dumps(state))

    def rollout(self, image: str, role: str = "api", timeout: int = 4, **env: str) -> subprocess.CompletedProcess:
        environment = {
            "PATH": f"{self.root / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
            "FAKE_DOCKER_STATE": str(self.state_file),
            "FAKE_DOCKER_LOG": str(self.root / "docker.log"),
            "FAKE_AWS_LOG": str(self.root / "aws.log"),
            "VISAPP_IMAGE": image,
            "VISAPP_ROLE": role,
            "VISAPP_PORT": str(self.port),
            "VISAPP_HEALTH_TIMEOUT": str(timeout),
            "VISAPP_HEALTH_INTERVAL": "1",
            **env,
        }
        return subprocess.run(
            [shutil.which("bash") or "/bin/bash", str(ROLLOUT)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _executable(path: Path, source: str) -> None:
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    if shutil.which("curl") is None:
        pytest.skip("rollout.sh polls /health with curl; no curl here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "docker", FAKE_DOCKER)
    _executable(bin_dir / "aws", FAKE_AWS)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"containers": {}, "logins": [], "pulled": [], "removed": []}))

    class Health(BaseHTTPRequestHandler):
        """/health of whichever running fake container publishes this port; refused when none does."""

        def do_GET(self) -> None:
            port = str(self.server.server_address[1])
            running = [
                c
                for c in json.loads(state_file.read_text())["containers"].values()
                if c["running"] and c["port"] == port
            ]
            if self.path != "/health" or not running:
                self.send_error(404 if running else 502)
                return
            container = running[0]
            digest = container["image"].rsplit(":", 1)[-1]
            ok = digest in HEALTHY_DIGESTS
            version = "yolo@v1.0.0" if digest == STALE else container["env"].get("VISAPP_MODEL_VERSION")
            model = {"version": version, "weights": "best.pt"} if version else None
            body = json.dumps({"ok": ok, "store": {"ok": ok, "detail": "fake"}, "model": model}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Runtime(tmp_path, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def image(digest: str, registry: str = REGISTRY) -> str:
    return f"{registry}@sha256:{digest}"


def test_healthy_new_container_is_kept_and_the_old_one_removed(runtime: Runtime):
    runtime.existing("visapp-api", OLD, port=str(runtime.port))

    proc = runtime.rollout(image(GOOD), VISAPP_MODEL_VERSION="yolo@v3.0.0")

    assert proc.returncode == 0, proc.stderr
    state = runtime.state()
    assert set(state["containers"]) == {"visapp-api"}
    api = state["containers"]["visapp-api"]
    assert api["image"] == image(GOOD) and api["running"]
    assert api["command"] == ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
    assert api["restart"] == "unless-stopped" and api["detach"]
    assert api["env"] == {"VISAPP_MODEL_VERSION": "yolo@v3.0.0"}
    assert [c["image"] for c in state["removed"]] == [image(OLD)]
    assert state["pulled"] == [image(GOOD)]
    verbs = [call[0] for call in runtime.calls()]
    assert verbs.index("pull") < verbs.index("stop") < verbs.index("rename") < verbs.index("run")
    assert ["rename", "visapp-api", "visapp-api-previous"] in runtime.calls()
    assert ["rm", "--force", "visapp-api-previous"] in runtime.calls()
    assert "is healthy" in proc.stderr


def test_unhealthy_new_container_is_rolled_back_to_the_previous_one(runtime: Runtime):
    runtime.existing("visapp-api", OLD, port=str(runtime.port))

    proc = runtime.rollout(image(BAD), timeout=3)

    assert proc.returncode == 1, proc.stderr
    state = runtime.state()
    assert set(state["containers"]) == {"visapp-api"}, "the new container is gone, the previous one is back"
    api = state["containers"]["visapp-api"]
    assert api["image"] == image(OLD) and api["running"]
    assert [c["image"] for c in state["removed"]] == [image(BAD)]
    calls = runtime.calls()
    assert ["rename", "visapp-api-previous", "visapp-api"] in calls
    assert ["start", "visapp-api"] in calls
    assert calls.index(["rm", "--force", "visapp-api"]) < calls.index(["start", "visapp-api"])
    assert "not healthy" in proc.stderr and "rolling back" in proc.stderr


def test_unhealthy_first_deployment_leaves_nothing_running_and_fails(runtime: Runtime):
    proc = runtime.rollout(image(BAD), timeout=2)

    assert proc.returncode == 1
    assert runtime.state()["containers"] == {}
    assert "no previous container" in proc.stderr


def test_an_api_serving_another_model_than_the_promoted_one_is_rolled_back(runtime: Runtime):
    runtime.existing("visapp-api", OLD, port=str(runtime.port))

    proc = runtime.rollout(image(STALE), timeout=3, VISAPP_MODEL_VERSION="yolo@v3.0.0")

    assert proc.returncode == 1, proc.stderr
    assert runtime.state()["containers"]["visapp-api"]["image"] == image(OLD)
    assert "serves model yolo@v1.0.0, not the promoted yolo@v3.0.0" in proc.stderr


def test_without_a_promoted_version_the_model_served_is_not_asked(runtime: Runtime):
    proc = runtime.rollout(image(STALE))

    assert proc.returncode == 0, proc.stderr


def test_container_that_exits_at_start_is_rolled_back_without_waiting_for_the_timeout(runtime: Runtime):
    runtime.existing("visapp-api", OLD, port=str(runtime.port))

    proc = runtime.rollout(image(CRASH), timeout=600)

    assert proc.returncode == 1
    assert runtime.state()["containers"]["visapp-api"]["image"] == image(OLD)
    assert "stopped or restarted" in proc.stderr


def test_a_stale_previous_container_from_an_interrupted_rollout_is_cleared_first(runtime: Runtime):
    runtime.existing("visapp-api-previous", OLD, running=False, port=str(runtime.port))
    runtime.existing("visapp-api", OLD, port=str(runtime.port))

    proc = runtime.rollout(image(GOOD))

    assert proc.returncode == 0, proc.stderr
    assert set(runtime.state()["containers"]) == {"visapp-api"}


def test_worker_rollout_and_rollback(runtime: Runtime):
    runtime.existing("visapp-worker", OLD)

    ok = runtime.rollout(image(GOOD), role="worker", timeout=2)
    assert ok.returncode == 0, ok.stderr
    worker = runtime.state()["containers"]["visapp-worker"]
    assert worker["command"] == ["worker"] and worker["gpus"] == "all" and worker["port"] is None
    assert worker["shm_size"] == "8g", "PyTorch's data loader workers need more than Docker's 64 MB of /dev/shm"

    crashed = runtime.rollout(image(CRASH), role="worker", timeout=2)
    assert crashed.returncode == 1
    assert runtime.state()["containers"]["visapp-worker"]["image"] == image(GOOD)
    assert runtime.state()["containers"]["visapp-worker"]["running"]


def test_ecr_login_uses_the_instance_role_and_the_config_comes_from_parameter_store(runtime: Runtime):
    registry = f"{'0' * 12}.dkr.ecr.eu-west-1.amazonaws.com/visapp"

    proc = runtime.rollout(image(GOOD, registry), VISAPP_CONFIG_PATH="/visapp/prod")

    assert proc.returncode == 0, proc.stderr
    aws = runtime.calls("aws.log")
    assert ["ecr", "get-login-password", "--region", "eu-west-1"] in aws
    assert aws[1][:5] == ["ssm", "get-parameters-by-path", "--path", "/visapp/prod", "--with-decryption"]
    state = runtime.state()
    assert state["logins"] == [{"registry": registry.split("/")[0], "password": "fake-ecr-password"}]
    assert state["containers"]["visapp-api"]["env"] == {
        "VISAPP_QUEUE_URL": "redis://queue.invalid:6379/0",
        "VISAPP_API_TOKEN": "s3cr3t-value",
    }
    assert "s3cr3t-value" not in proc.stderr
    assert not list(runtime.root.glob("tmp.*")), "the env file is removed when the script ends"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VISAPP_IMAGE": f"{REGISTRY}:latest"}, "by digest"),
        ({"VISAPP_ROLE": "db"}, "api or worker"),
        ({"VISAPP_PORT": "80; reboot"}, "whole numbers"),
        ({"VISAPP_SHM_SIZE": "8g --privileged"}, "a size such as 8g"),
        ({"VISAPP_MODEL_VERSION": "latest"}, "a version such as yolo@v3.0.0"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(runtime: Runtime, env: dict, message: str):
    proc = runtime.rollout(image(GOOD), **env)

    assert proc.returncode == 2
    assert message in proc.stderr
    assert runtime.calls() == []
