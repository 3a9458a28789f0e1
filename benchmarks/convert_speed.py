"""(N synthetic manifest rows) -> seconds and peak memory of `convert`, and of the synthetic sample's writer.

Usage: python benchmarks/convert_speed.py [N]   (default 20000 rows; the sample at its default size)

The rows name images that do not exist: convert reads only the manifest, so this measures the conversion
itself (parsing, box maths, label and list writing), not image I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import resource
import sys
import tempfile
import time
from pathlib import Path

from visapp.composition import default_params
from visapp.dataset.convert import convert
from visapp.dataset.synthetic import CLASSES, DEFAULT_IMAGES, write_synthetic
from visapp.formats.manifest import ManifestObject, ManifestRow, write_manifest


def _rows(n: int):
    for i in range(n):
        objects = [
            ManifestObject(CLASSES[(i + k) % 3], (i + k) % 3, 10.0 + k, 20.0, 90.0, 120.5, difficult=k == 2)
            for k in range(i % 4)
        ]
        yield ManifestRow(
            id=f"{i:07d}",
            image=f"JPEGImages/{i:07d}.jpg",
            annotation=f"Annotations/{i:07d}.xml",
            sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            format="jpeg",
            width=500,
            height=375,
            orientation=6 if i % 50 == 0 else 1,
            objects=objects,
        )


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = root / "manifest.jsonl"
        write_manifest(manifest, _rows(n))
        data = dataclasses.replace(default_params().data, classes=list(CLASSES))
        start = time.perf_counter()
        summary = convert(manifest, root / "raw", root / "yolo", data, seed=0)
        seconds = time.perf_counter() - start
        print(summary)
        print(f"convert: {n} rows in {seconds:.2f} s ({n / seconds:,.0f} rows/s)")
        start = time.perf_counter()
        write_synthetic(root / "sample")
        print(f"write_synthetic: {DEFAULT_IMAGES} images in {time.perf_counter() - start:.2f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
