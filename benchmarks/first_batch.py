"""The train stage's time to its first batch, with Ultralytics' label cache written from the manifest against
Ultralytics scanning every image itself.

    .venv/bin/python benchmarks/first_batch.py --images 20000 [--repeats 3] [--json FILE]

Generates N images with the built-in sample's generator (`visapp sample`), validates and converts them with the
library (untimed), then, alternating, `--repeats` times each, as a whole process (imports included):

- scan: what the train stage did before: the dataset view, then Ultralytics' train and val datasets, which
  open and verify every image (Ultralytics' `verify_image_label` in its thread pool), then the first batch of
  its training data loader;
- cache: the same with the train stage's `dataset_view`, which writes each split's label cache from
  validate's manifest first, so that Ultralytics loads it instead.

The model's construction, the same in both, is left out. It prints the medians, their ratio (target: <= 0.5)
and each one's peak RSS, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from pathlib import Path
from visapp.config import load_params
from visapp.dataset.views import build_link_view
from visapp.integrations import ultralytics
from visapp.training.run import dataset_view

mode, root = sys.argv[1], Path(sys.argv[2])
params = load_params(sys.argv[3], [f"paths.raw={root / 'raw'}", f"paths.yolo={root / 'yolo'}",
                                   f"paths.validated={root / 'validated'}"])
with ultralytics.session(root / "ultralytics"):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    if mode == "cache":
        data_yaml = dataset_view(params, root / "view")
    else:
        data_yaml = build_link_view(root / "yolo", root / "raw", root / "view").data_yaml
    written = {p: p.stat().st_mtime_ns for p in (root / "view").rglob("*.cache")}
    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(overrides={"imgsz": 64, "batch": 32, "workers": 0})
    train = build_yolo_dataset(cfg, data["train"], 32, data, mode="train")
    build_yolo_dataset(cfg, data["val"], 32, data, mode="val", rect=True)
    next(iter(build_dataloader(train, 32, 0, shuffle=True)))
seconds = time.perf_counter() - started
loaded = sum(1 for p, mtime in written.items() if p.stat().st_mtime_ns == mtime)  # not scanned again
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "caches_loaded": loaded}))
"""


def prepare(root: Path, images: int) -> None:
    """data/raw, data/validated/manifest.jsonl and data/yolo of N sample images under `root` (untimed)."""
    from visapp.config import load_params
    from visapp.dataset.convert import convert
    from visapp.dataset.synthetic import write_synthetic
    from visapp.dataset.validate import validate_dataset
    from visapp.formats.manifest import MANIFEST_FILE, write_manifest

    params = load_params(REPO / "params.yaml")
    write_synthetic(root / "raw", images=images, seed=0)
    result = validate_dataset(root / "raw", params.data)
    (root / "validated").mkdir()
    write_manifest(root / "validated" / MANIFEST_FILE, result.rows)
    convert(root / "validated" / MANIFEST_FILE, root / "raw", root / "yolo", params.data, seed=params.seed)


def run(mode: str, root: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), str(REPO / "params.yaml")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{mode} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--data", type=Path, help="prepare the dataset here, or reuse the one prepared here before")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vis-first-batch-") as tmp:
        root = args.data or Path(tmp)
        started = time.perf_counter()
        if not (root / "yolo").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            prepare(root, args.images)
        print(f"prepared {args.images} images in {time.perf_counter() - started:.0f} s", flush=True)
        found: dict[str, list[dict[str, float]]] = {"scan": [], "cache": []}
        for _ in range(args.repeats):
            for mode in found:
                found[mode].append(run(mode, root))
                print(mode, json.dumps(found[mode][-1]), flush=True)
    medians = {mode: statistics.median(r["seconds"] for r in runs) for mode, runs in found.items()}
    peaks = {mode: max(r["peak_mb"] for r in runs) for mode, runs in found.items()}
    summary = {
        "images": args.images,
        "repeats": args.repeats,
        "scan_seconds": round(medians["scan"], 2),
        "cache_seconds": round(medians["cache"], 2),
        "ratio": round(medians["cache"] / medians["scan"], 3),
        "scan_peak_mb": round(peaks["scan"], 1),
        "cache_peak_mb": round(peaks["cache"], 1),
        "caches_loaded": [r["caches_loaded"] for r in found["cache"]],  # train, val and test: 3 each
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
