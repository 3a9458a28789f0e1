"""`visapp serve` on loopback for the service benchmarks: started, waited for, stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    scratch: Path, env: dict[str, str], *options: str, worker: bool = False
) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of `visapp serve --no-worker OPTIONS` (with `worker`: its own worker too) run in
    `scratch`, once it answers /health."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "visapp"), "serve", *([] if worker else ["--no-worker"]), *options, "--port", str(port)],
        cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=60)
