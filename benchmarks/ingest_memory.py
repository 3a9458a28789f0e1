"""Peak memory of `visapp ingest` on a ZIP of N images -> MB, against a streaming-unzip reference, as a ratio.

    .venv/bin/python benchmarks/ingest_memory.py [--images 5000] [--image-kb 60] [--big-entry-mb 64]

The archive: N images of `--image-kb` KB each (JPEG markers around random, incompressible bytes: ingest never
decodes images, so their pixels do not matter, their size does) plus one VOC XML each, under a top folder
(`Export/Annotations`, `Export/JPEGImages`), deflated; plus one image of `--big-entry-mb` MB, to show that
an entry is streamed, not read whole.

Each measurement runs in a fresh subprocess and reads its own peak RSS (`ru_maxrss`):

- imports:   `import visapp.ingest.ingest` and DVC's `Repo`, nothing else;
- reference: the same imports, then list the ZIP and copy every entry to disk with `shutil.copyfileobj`: the
  floor any streaming extractor pays;
- ingest:    `visapp.ingest.ingest(zip, data/raw)` in a fresh git + DVC repository: vet every entry, extract
  into the staging folder, pair the samples, hash them into DVC's cache, swap them in, write data/raw.dvc.

The target: ingesting a ZIP of 5,000 images stays under 300 MB peak. Exit status 1
when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

TARGET_MB = 300.0

_PREAMBLE = """
import json, resource, sys, time
from pathlib import Path
import visapp.ingest.ingest
from dvc.repo import Repo
archive, work = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
"""
_EPILOGUE = """
info["seconds"] = round(time.perf_counter() - start, 2)
info["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(info))
"""
PROBES = {
    "imports": "info = {}",
    "reference": """
import shutil, zipfile
out = work / "unzipped"
files = 0
with zipfile.ZipFile(archive) as zf:
    for entry in zf.infolist():
        target = out / entry.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(entry) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        files += 1
info = {"files": files}
""",
    "ingest": """
result = visapp.ingest.ingest.ingest(archive, work / "repo" / "data" / "raw")
info = {"images": result.images, "annotations": result.annotations, "nfiles": result.nfiles, "md5": result.md5}
""",
}


def _xml(stem: str) -> bytes:
    return (
        f"<annotation><folder>Export</folder><filename>{stem}.jpg</filename>"
        "<size><width>640</width><height>480</height><depth>3</depth></size>"
        "<object><name>circle</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        "<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>220</ymax></bndbox></object></annotation>\n"
    ).encode()


def generate(path: Path, images: int, image_kb: int, big_entry_mb: int) -> None:
    """Write the archive (random image bytes from a fixed seed)."""
    import random

    rng = random.Random(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for n in range(images):
            stem = f"{n:06d}"
            archive.writestr(f"Export/Annotations/{stem}.xml", _xml(stem))
            body = rng.randbytes(image_kb * 1024)
            archive.writestr(f"Export/JPEGImages/{stem}.jpg", b"\xff\xd8\xff\xe0" + body + b"\xff\xd9")
        if big_entry_mb:
            with archive.open("Export/JPEGImages/big.jpg", "w", force_zip64=True) as handle:
                handle.write(b"\xff\xd8\xff\xe0")
                for _ in range(big_entry_mb):
                    handle.write(rng.randbytes(1024 * 1024))
                handle.write(b"\xff\xd9")


def measure(kind: str, archive: Path, work: Path) -> dict:
    code = _PREAMBLE + PROBES[kind] + _EPILOGUE
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(archive), str(work)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{kind} probe failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_repo(root: Path) -> None:
    root.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], [str(Path(sys.executable).parent / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--image-kb", type=int, default=60, help="size of each image (default 60 KB)")
    parser.add_argument("--big-entry-mb", type=int, default=64, help="one extra image this large (0: none)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vis-ingest-bench-") as tmp:
        work = Path(tmp)
        archive = work / "dataset.zip"
        start = time.perf_counter()
        generate(archive, args.images, args.image_kb, args.big_entry_mb)
        size_mb = archive.stat().st_size / 1024**2
        print(f"generated {archive.name}: {args.images} images + {args.images} XMLs", end="")
        print(f" (+1 image of {args.big_entry_mb} MB), {size_mb:.0f} MB, in {time.perf_counter() - start:.1f} s")
        make_repo(work / "repo")
        results = {kind: measure(kind, archive, work) for kind in ("imports", "reference", "ingest")}

    ingest, reference, imports = results["ingest"], results["reference"], results["imports"]
    ratio = ingest["peak_mb"] / reference["peak_mb"]
    print(f"imports only:                   {imports['peak_mb']:7.1f} MB peak")
    print(f"reference (streaming unzip):    {reference['peak_mb']:7.1f} MB peak  {reference['seconds']:6.1f} s")
    print(
        f"visapp ingest:                  {ingest['peak_mb']:7.1f} MB peak  {ingest['seconds']:6.1f} s"
        f"  ({ingest['images']} images, {ingest['annotations']} annotations, {ingest['nfiles']} files)"
    )
    print(f"ratio ingest / reference:       {ratio:7.2f}")
    print(f"growth over imports:            {ingest['peak_mb'] - imports['peak_mb']:7.1f} MB")
    within = ingest["peak_mb"] < TARGET_MB
    print(f"target < {TARGET_MB:.0f} MB: {'met' if within else 'MISSED'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
