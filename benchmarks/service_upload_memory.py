"""Peak memory of `visapp serve` while it receives a large upload -> MB, against the same server idle.

    .venv/bin/python benchmarks/service_upload_memory.py [--mb 500]

Builds a ZIP of `--mb` MB (a tiny VOC dataset plus one incompressible file, stored), starts `visapp serve
--open --no-worker` on loopback in a scratch folder, and uploads the ZIP with a streaming client. The upload is
larger than the inline limit, so the server streams it to disk, stores it in the job store and answers 202
(a worker would check it); the server's own peak RSS (VmHWM) is read from /proc before and after.

- reference: the server after start-up and one small request (its floor);
- upload:    the same server after receiving and storing the archive.

Target: the server stays under 300 MB peak. Exit status 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from serving import VENV_BIN, serving

TARGET_MB = 300.0


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


def build_zip(path: Path, megabytes: int, scratch: Path) -> None:
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(scratch / "voc"), "--images", "12"],
                   check=True, capture_output=True)  # fmt: skip
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted((scratch / "voc").rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(scratch / "voc").as_posix())
        with archive.open("extra/recording.bin", "w", force_zip64=True) as entry:
            block = os.urandom(1024 * 1024)
            for _ in range(megabytes):
                entry.write(block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    import httpx

    with tempfile.TemporaryDirectory(prefix="vis-bench-") as tmp:
        scratch = Path(tmp)
        archive = scratch / "upload.zip"
        build_zip(archive, args.mb, scratch)
        size_mb = archive.stat().st_size / 1024**2
        env = {**os.environ, "VISAPP_STORE_URL": (scratch / "jobs").as_uri(), "VISAPP_WORK_DIR": str(scratch / "work"),
               "VISAPP_QUEUE_URL": f"sqlite:///{scratch / 'queue.db'}", "VISAPP_MAX_UPLOAD": "4G"}  # fmt: skip
        env.pop("VISAPP_API_TOKEN", None)
        with serving(scratch, env, "--open") as (url, server):
            reference = peak_mb(server.pid)
            start = time.perf_counter()
            with archive.open("rb") as handle:
                answer = httpx.post(f"{url}/upload-dataset", files={"file": ("upload.zip", handle, "application/zip")},
                                    timeout=600)  # fmt: skip
            seconds = time.perf_counter() - start
            upload = peak_mb(server.pid)
        stored = sum(f.stat().st_size for f in (scratch / "jobs").rglob("upload.zip"))
        shutil.rmtree(scratch / "jobs", ignore_errors=True)
    result = {
        "upload_mb": round(size_mb, 1),
        "status": answer.status_code,
        "stored_mb": round(stored / 1024**2, 1),
        "seconds": round(seconds, 1),
        "reference_peak_mb": round(reference, 1),
        "upload_peak_mb": round(upload, 1),
        "ratio": round(upload / reference, 2),
        "target_mb": TARGET_MB,
    }
    print(json.dumps(result, indent=2))
    return 0 if upload < TARGET_MB and answer.status_code == 202 else 1


if __name__ == "__main__":
    sys.exit(main())
