"""Peak memory of `validate_dataset` on N generated VOC samples -> MB, against a streaming reference, as a ratio.

    .venv/bin/python benchmarks/validate_memory.py [--samples 20000] [--objects 6] [--missing-images]

The dataset: N annotation files in the standard layout, VOC-sized XML (~1 KB: source, owner, size, 1..objects
objects with pose/truncated/difficult), each with its own small JPEG (unique bytes, so no duplicate
warnings), because the realistic load is the full one: every XML parsed, every image read, hashed and
decoded, and one manifest row kept per sample. `--missing-images` writes the annotations only (every sample
then carries an image_missing issue instead of a row).

Each measurement runs in a fresh subprocess and reads its own peak RSS (`ru_maxrss`):

- validate:  `validate_dataset(raw_dir, data)`, the manifest rows and report kept, as the stage does;
- reference: the same imports, then one pass that reads and parses every XML (defusedxml) and reads, hashes
  and decodes every image, keeping nothing: the floor any streaming validator pays;
- imports:   the same imports and nothing else.

The target: validating 20,000 annotations stays under 300 MB peak. Exit status 1 when
it does not.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 300.0
CLASSES = ["circle", "square", "triangle", "person", "car"]

_PREAMBLE = """
import json, resource, sys, time
from pathlib import Path
import dataclasses
from visapp.composition import default_params
import visapp.dataset.validate
import defusedxml.ElementTree, PIL.Image  # imported lazily by the library; loaded here so all probes pay them
raw = Path(sys.argv[1])
start = time.perf_counter()
"""
_EPILOGUE = """
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - start, **info}))
"""
PROBES = {
    "imports": "info = {}",
    "validate": f"""
result = visapp.dataset.validate.validate_dataset(raw, dataclasses.replace(default_params().data, classes={CLASSES!r}))
info = dict(rows=len(result.rows), issues=len(result.report["issues"]), accepted=result.report["accepted"])
""",
    "reference": """
import hashlib, io
from defusedxml.ElementTree import fromstring
from PIL import Image
count = 0
for path in sorted(raw.rglob("*")):
    if path.suffix == ".xml":
        fromstring(path.read_bytes(), forbid_dtd=True)
    elif path.suffix == ".jpg":
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    else:
        continue
    count += 1
info = {"files": count}
""",
}


def _xml(stem: str, n_objects: int, width: int, height: int) -> str:
    objects = []
    for k in range(n_objects):
        x, y = (7 * k) % (width // 2), (5 * k) % (height // 2)
        objects.append(
            f"""
  <object>
    <name>{CLASSES[(len(stem) + k) % len(CLASSES)]}</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>{int(k == 3)}</difficult>
    <bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + width // 2}</xmax><ymax>{y + height // 2}</ymax></bndbox>
  </object>"""
        )
    return f"""<annotation>
  <folder>VOC2012</folder>
  <filename>{stem}.jpg</filename>
  <source><database>The VOC2007 Database</database><annotation>PASCAL VOC2007</annotation><image>flickr</image></source>
  <owner><flickrid>benchmark</flickrid><name>VIS</name></owner>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
  <segmented>0</segmented>{"".join(objects)}
</annotation>
"""


def generate(raw: Path, samples: int, max_objects: int, images: bool) -> None:
    """Write the dataset (deterministic); images are 48x32 JPEGs, each with its own bytes."""
    from PIL import Image

    (raw / "Annotations").mkdir(parents=True)
    (raw / "JPEGImages").mkdir()
    width, height = 48, 32
    base = Image.new("RGB", (width, height), (90, 120, 150))
    for n in range(samples):
        stem = f"{n:06d}"
        (raw / "Annotations" / f"{stem}.xml").write_text(_xml(stem, 1 + n % max_objects, width, height))
        if images:
            image = base.copy()
            image.putpixel((n % width, (n // width) % height), (n % 256, (n // 256) % 256, 255))
            image.putpixel((0, 0), ((n // 65536) % 256, 0, 0))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90, comment=f"sample {n}")  # unique bytes even where pixels collide
            (raw / "JPEGImages" / f"{stem}.jpg").write_bytes(buffer.getvalue())


def measure(kind: str, raw: Path) -> dict:
    code = _PREAMBLE + PROBES[kind] + _EPILOGUE
    proc = subprocess.run([sys.executable, "-c", code, str(raw)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{kind} probe failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--objects", type=int, default=6, help="objects per annotation cycle through 1..N")
    parser.add_argument("--missing-images", action="store_true", help="write annotations only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vis-validate-bench-") as tmp:
        raw = Path(tmp) / "raw"
        start = time.perf_counter()
        generate(raw, args.samples, args.objects, images=not args.missing_images)
        print(f"generated {args.samples} annotations" + ("" if args.missing_images else " + JPEG images"), end="")
        print(f" in {time.perf_counter() - start:.1f} s")
        results = {kind: measure(kind, raw) for kind in ("imports", "reference", "validate")}

    validate, reference, imports = results["validate"], results["reference"], results["imports"]
    ratio = validate["peak_mb"] / reference["peak_mb"]
    print(f"imports only:                  {imports['peak_mb']:7.1f} MB peak")
    print(f"reference (parse+decode pass): {reference['peak_mb']:7.1f} MB peak  {reference['seconds']:6.1f} s")
    print(
        f"validate_dataset:              {validate['peak_mb']:7.1f} MB peak  {validate['seconds']:6.1f} s"
        f"  ({validate['rows']} manifest rows, {validate['issues']} issues)"
    )
    print(f"ratio validate / reference:    {ratio:7.2f}")
    growth = validate["peak_mb"] - imports["peak_mb"]
    print(f"growth over imports:           {growth:7.1f} MB = {growth * 1024 / args.samples:.2f} KB per sample")
    within = validate["peak_mb"] < TARGET_MB
    print(f"target < {TARGET_MB:.0f} MB: {'met' if within else 'MISSED'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
