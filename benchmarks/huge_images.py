"""Peak memory of `visapp check` and of the metadata stage on huge images -> MB, against the same runs on small ones.

    .venv/bin/python benchmarks/huge_images.py [--progressive] [--keep DIR]

The dataset (built once, in a temporary folder, in a few seconds): three samples in the standard VOC layout,
each image with its annotation (one object):

- `huge.png`:    13,000 x 13,000 RGB (169 megapixels, 507 MB of pixels) of one colour, about 0.5 MB on disk;
- `bilevel.png`: 13,000 x 13,000 1-bit grey, about 35 KB on disk: the "small file, huge image" case;
- `photo.jpg`:   10,328 x 7,760 (80 megapixels) baseline JPEG of smooth gradients (`--progressive`: a
                 progressive one, whose decoder holds every DCT coefficient whatever the output size).

The reference dataset holds the same three samples at 640 x 480.

Each measurement runs in a fresh process, started from a small launcher process: on Linux a child's
`ru_maxrss` starts at its parent's high-water mark (it is carried across fork and exec), so a command started
straight from this script (which built a 240 MB JPEG) or from pytest would report at least their peak.

- check:         `visapp check RAW` with the default data.max_image_pixels (100,000,000): the PNGs are
                 `image_too_large` from their header, the JPEG is decoded at 1/8 scale;
- check raised:  the same with data.max_image_pixels = 200,000,000 (a params.yaml in the working folder), so
                 that every image is checked (the PNGs' image data streamed, the JPEG decoded reduced);
- metadata:      `build_metadata` (statistics + the three figures, examples drawn from the images) on the
                 manifest and YOLO labels that validate (raised limit) and convert wrote for the dataset.

The target: each run on the huge images stays under 300 MB peak, and none writes a warning (Pillow's
DecompressionBombWarning, matplotlib's missing glyphs) to stderr. Exit status 1 when one does not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

TARGET_MB = 300.0
CLASSES = ["circle", "square", "triangle"]
RAISED_LIMIT = 200_000_000
PNG_SIZE = (13_000, 13_000)
JPEG_SIZE = (10_328, 7_760)
SMALL_SIZE = (640, 480)
VISAPP = Path(sys.executable).parent / "visapp"

# Runs argv[1:] and prints its peak RSS (of the child alone: this launcher is small when it forks), exit status,
# stdout and stderr as one JSON line.
_LAUNCHER = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"peak_mb": peak_mb, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))
"""

_PREPARE = """
import dataclasses, sys
from pathlib import Path
from visapp.composition import default_params
from visapp.dataset.convert import convert
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.manifest import MANIFEST_FILE
root, classes, limit = Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
data = dataclasses.replace(default_params().data, classes=classes, max_image_pixels=limit)
result = validate_dataset(root / "raw", data)
assert result.report["accepted"] == 3, result.report
write_validation(result, root / "validated", "skip")
convert(root / "validated" / MANIFEST_FILE, root / "raw", root / "yolo", data, seed=0)
"""

_METADATA = """
import json, sys
from pathlib import Path
from visapp.dataset.statistics import build_metadata
from visapp.formats.manifest import MANIFEST_FILE
root, classes = Path(sys.argv[1]), sys.argv[2].split(",")
meta = build_metadata(root / "validated" / MANIFEST_FILE, root / "yolo", root / "raw", root / "metadata", classes)
print(json.dumps({"images": meta["overall"]["images"]}))
"""


# ---------------------------------------------------------------- the images


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate(data: bytes, final: bool) -> bytes:
    """Raw deflate of `data` on its own (no history): byte-aligned, so such pieces concatenate into one stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def huge_png(width: int, height: int, bilevel: bool = False) -> bytes:
    """A valid PNG of one colour (RGB 8-bit, or 1-bit grey), built without ever holding its pixels.

    Every row after the first uses the "Up" filter, so its filtered bytes are zeros: one block of such rows is
    compressed once and repeated, and the zlib checksum is carried over the rows as they would be inflated.
    """
    row_bytes = (width + 7) // 8 if bilevel else 3 * width
    first = b"\x00" + (b"\xaa" * row_bytes if bilevel else bytes((200, 120, 40)) * width)
    up = b"\x02" + bytes(row_bytes)
    per_block = max(1, (1 << 22) // len(up))  # about 4 MB of rows a block
    blocks, rest = divmod(height - 1, per_block)
    block = up * per_block
    block_deflated = _deflate(block, final=False)
    pieces, checksum = [_deflate(first, final=False)], zlib.adler32(first)
    for _ in range(blocks):
        pieces.append(block_deflated)
        checksum = zlib.adler32(block, checksum)
    pieces.append(_deflate(up * rest, final=True))
    checksum = zlib.adler32(up * rest, checksum)
    stream = b"\x78\xda" + b"".join(pieces) + struct.pack(">I", checksum)
    colour_type, depth = (0, 1) if bilevel else (2, 8)
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    idat = b"".join(_chunk(b"IDAT", stream[i : i + (1 << 20)]) for i in range(0, len(stream), 1 << 20))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def big_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    """A JPEG of smooth gradients (every block decodes to something), quality 90, 4:2:0."""
    import io

    from PIL import Image

    ramp = Image.linear_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    disc = Image.radial_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    image = Image.merge("RGB", (ramp, disc, ramp.transpose(Image.Transpose.ROTATE_180)))
    del ramp, disc
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def _xml(filename: str, width: int, height: int, name: str) -> str:
    return (
        f"<annotation><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{width // 4}</xmin>"
        f"<ymin>{height // 4}</ymin><xmax>{3 * width // 4}</xmax><ymax>{3 * height // 4}</ymax></bndbox></object>"
        "</annotation>\n"
    )


def write_dataset(raw: Path, small: bool = False, progressive: bool = False) -> None:
    """The three samples (see the module docstring) under raw/Annotations and raw/JPEGImages."""
    (raw / "Annotations").mkdir(parents=True)
    (raw / "JPEGImages").mkdir()
    png_size, jpeg_size = (SMALL_SIZE, SMALL_SIZE) if small else (PNG_SIZE, JPEG_SIZE)
    images = {
        "huge.png": (lambda: huge_png(*png_size), png_size),
        "bilevel.png": (lambda: huge_png(*png_size, bilevel=True), png_size),
        "photo.jpg": (lambda: big_jpeg(*jpeg_size, progressive=progressive), jpeg_size),
    }
    for index, (filename, (build, (width, height))) in enumerate(images.items()):
        (raw / "JPEGImages" / filename).write_bytes(build())
        xml = _xml(filename, width, height, CLASSES[index % len(CLASSES)])
        (raw / "Annotations" / f"{Path(filename).stem}.xml").write_text(xml, encoding="utf-8")


def write_raised_params(folder: Path, max_image_pixels: int = RAISED_LIMIT) -> Path:
    """A params.yaml in `folder` (conf/'s composition) with data.max_image_pixels raised: what `visapp check`
    run from that folder reads."""
    import yaml

    from visapp.composition import compose

    raw = compose()
    raw["data"]["max_image_pixels"] = max_image_pixels
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- measuring


def measured(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> dict:
    """Run `cmd` from a small launcher process: {"peak_mb", "rc", "stdout", "stderr"} of `cmd` alone."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *map(str, cmd)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the launcher failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_command(raw: Path) -> list[str]:
    return [str(VISAPP), "check", str(raw), "--classes", ",".join(CLASSES)]


def warning_lines(stderr: str) -> list[str]:
    """Lines of stderr that are warnings (Python's warnings module, or a logged WARNING)."""
    return [line for line in stderr.splitlines() if "Warning" in line or "WARNING" in line]


def prepare(root: Path, progressive: bool, small: bool) -> None:
    write_dataset(root / "raw", small=small, progressive=progressive)
    proc = subprocess.run(
        [sys.executable, "-c", _PREPARE, str(root), ",".join(CLASSES), str(RAISED_LIMIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"validate + convert failed on {root}:\n{proc.stderr}")
    write_raised_params(root / "raised")


def run_cases(root: Path) -> dict[str, dict]:
    return {
        "check": measured(check_command(root / "raw"), cwd=root),
        "check raised": measured(check_command(root / "raw"), cwd=root / "raised"),
        "metadata": measured([sys.executable, "-c", _METADATA, root, ",".join(CLASSES)]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--progressive", action="store_true", help="a progressive JPEG instead of a baseline one")
    parser.add_argument("--keep", help="build the datasets in this folder (made if absent) and leave them there")
    args = parser.parse_args()

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vis-huge-images-bench-"))
    try:
        start = time.perf_counter()
        huge, small = tmp / "huge", tmp / "small"
        for root, is_small in ((huge, False), (small, True)):
            if root.exists():
                shutil.rmtree(root)
            prepare(root, args.progressive, is_small)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted((huge / "raw").rglob("*.*g")))
        print(f"built the datasets in {time.perf_counter() - start:.1f} s ({sizes})")
        imports = measured([sys.executable, "-c", "import visapp.cli, visapp.dataset.validate, cv2, PIL.Image"])
        print(f"{'imports only':<14}{imports['peak_mb']:8.1f} MB peak")
        reference, results = run_cases(small), run_cases(huge)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    within = True
    print(f"{'':<14}{'640x480':>12}{'huge':>12}{'ratio':>8}  warnings  (target < {TARGET_MB:.0f} MB)")
    for case, result in results.items():
        ref = reference[case]
        warned = warning_lines(result["stderr"])
        ok = result["peak_mb"] < TARGET_MB and not warned
        within &= ok
        print(
            f"{case:<14}{ref['peak_mb']:9.1f} MB{result['peak_mb']:9.1f} MB{result['peak_mb'] / ref['peak_mb']:8.2f}"
            f"  {len(warned):>8}  {'met' if ok else 'MISSED'}"
        )
        for line in warned[:3]:
            print(f"    {line.strip()[:150]}")
        if case.startswith("check"):
            summary = result["stdout"].strip().splitlines()
            print(f"    {summary[0] if summary else result['stderr'].strip()[-300:]}")
    print(f"target < {TARGET_MB:.0f} MB and no warnings: {'met' if within else 'MISSED'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
