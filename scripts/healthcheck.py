"""The image's HEALTHCHECK, with nothing but Python's standard library (no curl in the image).

`visapp serve` is healthy while it answers GET /health on its port (`--port`, default 8000): the process serves.
The body's `"ok"` (the store, the queue and the tracking server reachable) is what a deployment waits for before it
sends traffic (deploy/rollout.sh); it is not asked here, so a tracking server that is down for a minute does not
mark every API container unhealthy. Any other command (`visapp worker`, `visapp doctor`, `dvc repro`) is healthy
while it runs: the container's first process is read from /proc/1/cmdline.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

DEFAULT_PORT = 8000
TIMEOUT_S = 8


def served_port(argv: list[str]) -> int | None:
    """The port `visapp serve` listens on, from its command line; None when the command is not `serve`."""
    if "serve" not in argv:
        return None
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.partition("=")[2])
    return DEFAULT_PORT


def main(cmdline: Path = Path("/proc/1/cmdline")) -> int:
    argv = [part.decode(errors="replace") for part in cmdline.read_bytes().split(b"\0") if part]
    port = served_port(argv)
    if port is None:
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"GET http://127.0.0.1:{port}/health: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
