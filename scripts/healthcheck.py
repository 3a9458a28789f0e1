"""The image's HEALTHCHECK, with nothing but Python's standard library (no curl in the image).

`visapp serve` is healthy while it answers GET /health on its port (`--port`, default 8000): the process serves.
The body's `"ok"` (the store, the queue and the tracking server reachable) is what a deployment waits for before it
sends traffic (deploy/rollout.sh); it is not asked here, so a tracking server that is down for a minute does not
mark every API container unhealthy. Any other command (`visapp worker`, `visapp doctor`, `dvc repro`) is healthy
while it runs.

Which command the container runs is read from its processes, not from PID 1 alone: `visapp serve` need not be PID 1
(`docker run --init`, an init or a shell in front of it, a PID namespace shared with other containers). Every
process of /proc whose command line is `visapp ... serve` and that shares this check's mount namespace (the same
container: a process of another container, or of the host, has its own) must answer on its port. None: not a
server, healthy while it runs (a container whose main command has exited has stopped).
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

DEFAULT_PORT = 8000
TIMEOUT_S = 8


def served_port(argv: list[str]) -> int | None:
    """The port `visapp serve` listens on, from its command line; None when the command is not `visapp serve`."""
    program = next((i for i, arg in enumerate(argv) if Path(arg).name == "visapp"), None)
    if program is None or "serve" not in argv[program + 1 :]:
        return None
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.partition("=")[2])
    return DEFAULT_PORT


def _namespace(proc: Path, pid: str) -> str | None:
    try:
        return str((proc / pid / "ns" / "mnt").readlink())
    except OSError:  # gone, or not ours to inspect: another user's process is not this container's server
        return None


def served_ports(proc: Path = Path("/proc")) -> list[int]:
    """The ports of every `visapp serve` process in this check's mount namespace (its container), sorted."""
    own = _namespace(proc, "self")
    ports = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or _namespace(proc, entry.name) != own:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        port = served_port([part.decode(errors="replace") for part in raw.split(b"\0") if part])
        if port is not None:
            ports.add(port)
    return sorted(ports)


def main(proc: Path = Path("/proc")) -> int:
    status = 0
    for port in served_ports(proc):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_S) as response:
                if response.status != 200:
                    status = 1
        except OSError as exc:  # refused, timed out, or an HTTP error status
            print(f"GET http://127.0.0.1:{port}/health: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
