"""(N synthetic manifest rows) -> seconds and peak memory of `visapp.convert.convert`, and of `write_sample`.

Usage: python benchmarks/convert_speed.py [N]   (default 20000 rows; the sample at its default size)

The rows name images that do not exist: convert reads only the manifest, so this measures the conversion
itself (parsing, box maths, label and list writing), not image I/O.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from visapp.config import DataConfig
from visapp.convert import convert
from visapp.sample import CLASSES, DEFAULT_IMAGES, write_sample


def _rows(n: int):
    for i in range(n):
        objects = [
            {"name": CLASSES[(i + k) % 3], "class_id": (i + k) % 3, "xmin": 10.0 + k, "ymin": 20.0, "xmax": 90.0,
             "ymax": 120.5, "difficult": k == 2, "truncated": False}
            for k in range(i % 4)
        ]  # fmt: skip
        yield {
            "id": f"{i:07d}", "image": f"JPEGImages/{i:07d}.jpg", "annotation": f"Annotations/{i:07d}.xml",
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(), "format": "jpeg", "width": 500, "height": 375,
            "orientation": 6 if i % 50 == 0 else 1, "boxes_frame": "stored", "split": None, "objects": objects,
        }  # fmt: skip


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = root / "manifest.jsonl"
        with manifest.open("w") as handle:
            for row in _rows(n):
                handle.write(json.dumps(row, sort_keys=True) + "\n")
        start = time.perf_counter()
        summary = convert(manifest, root / "raw", root / "yolo", DataConfig(classes=list(CLASSES)), seed=0)
        seconds = time.perf_counter() - start
        print(summary)
        print(f"convert: {n} rows in {seconds:.2f} s ({n / seconds:,.0f} rows/s)")
        start = time.perf_counter()
        write_sample(root / "sample")
        print(f"write_sample: {DEFAULT_IMAGES} images in {time.perf_counter() - start:.2f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
