"""Latency of `POST /models/{version}/predict` on a 640 px image -> median and p99, against Ultralytics' own
predict with the same ONNX file in the same run.

    .venv/bin/python benchmarks/predict_latency.py [--weights models/yolo/weights/best.pt] [--requests 100]

In a scratch project (git + DVC), the weights are exported to ONNX and kept as a version's export
(`models/exports/yolo/v1.0.0.onnx`, DVC-tracked, as `visapp export` keeps it), and a tag names the version. A
`visapp serve --open` from that project answers the predictions (ONNX Runtime, the model loaded once: the first
request is left out). The reference is `YOLO(onnx).predict(image)` in this process, the same image and size.

- reference: Ultralytics' predict of the ONNX file, in process (decode, letterbox, ONNX Runtime, NMS);
- service:   the HTTP request: upload, image checks, the same predict, the JSON answer.

Target: the service's median within 1.2x the reference's. Exit status 1 when it is not.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import VENV_BIN, serving

TARGET = 1.2


def timings(call, n: int) -> list[float]:
    found = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        found.append((time.perf_counter() - started) * 1000)
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="models/yolo/weights/best.pt")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    weights = Path(args.weights).resolve()
    if not weights.is_file():
        print(f"{weights} not found: train first (`make demo`)", file=sys.stderr)
        return 2
    import httpx
    from PIL import Image

    from visapp.integrations import dvc, ultralytics

    with tempfile.TemporaryDirectory(prefix="vis-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench",
               "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip

        def run(*cmd: str) -> None:
            subprocess.run(cmd, cwd=root, check=True, capture_output=True, env=env)

        run("git", "init", "-q", "-b", "main")
        run(str(VENV_BIN / "dvc"), "init", "-q")
        shutil.copy(weights, Path(tmp) / "best.pt")
        with ultralytics.session(Path(tmp) / "ultralytics"):
            onnx = ultralytics.export_onnx(Path(tmp) / "best.pt", 640)
        target = root / "models" / "exports" / "yolo" / "v1.0.0.onnx"
        target.parent.mkdir(parents=True)
        shutil.copy(onnx, target)
        dvc.track_file(root, target)
        run("git", "add", "-A")
        run("git", "commit", "-q", "-m", "the export of v1")
        run("git", "tag", "-a", "yolo@v1.0.0", "-m", "yolo v1.0.0")

        image = Image.new("RGB", (640, 480), (90, 120, 160))
        image.paste((230, 40, 40), (200, 150, 330, 280))
        data = io.BytesIO()
        image.save(data, "JPEG", quality=90)
        picture = Path(tmp) / "image.jpg"
        picture.write_bytes(data.getvalue())

        with ultralytics.session(Path(tmp) / "ultralytics"):
            loaded = ultralytics.load(onnx)
            ultralytics.detect(loaded, str(picture), 0.25)  # warm-up
            reference = timings(lambda: ultralytics.detect(loaded, str(picture), 0.25), args.requests)

        serve_env = {
            **env,
            "VISAPP_WORK_DIR": str(Path(tmp) / "work"),
            "VISAPP_STORE_URL": (Path(tmp) / "jobs").as_uri(),
        }
        with serving(root, serve_env, "--open") as (url, _server):
            files = {"image": ("image.jpg", data.getvalue(), "image/jpeg")}
            first = httpx.post(f"{url}/models/yolo@v1.0.0/predict", files=files, timeout=300)
            first.raise_for_status()
            assert first.json()["model"]["runtime"] == "onnxruntime", first.text
            with httpx.Client(base_url=url, timeout=60) as client:
                service = timings(lambda: client.post("/models/yolo@v1.0.0/predict", files=files).raise_for_status(),
                                  args.requests)  # fmt: skip
    result = {
        "image": "640x480 JPEG",
        "model_imgsz": loaded.imgsz,
        "requests": args.requests,
        "reference": summary(reference),
        "service": summary(service),
        "median_ratio": round(statistics.median(service) / statistics.median(reference), 2),
        "target": TARGET,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["median_ratio"] <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
