"""The validate stage with the dataset-quality checks on against off: their cost, as a ratio.

    .venv/bin/python benchmarks/quality_overhead.py [--images 20000] [--repeats 3] [--json FILE]

Generates a VOC dataset of N images (data_stages.py's generator: 500x375 JPEGs, 1-4 boxes of 3 classes), then
runs `stages/validate.py` as DVC runs it (a whole process, imports included, a process pool over the cores,
an empty reuse store every time), alternating `quality.enabled: true` and `false`, `--repeats` times each.
On: every image is also measured (brightness, blur, pHash) from the decode validation makes anyway, and the
dataset-level checks (overlaps, tiny boxes, outliers, near-duplicates over all pairs, classes) run once all
samples are checked. It prints the medians and their ratio and writes them as JSON. Target: ratio <= 1.20.
The generator shifts one noise picture per image, so every 500th image repeats a background: the report with
the checks on holds near-duplicate findings, which is work the checks do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from data_stages import CLASSES, PY, REPO, generate_timed, launch

DEFAULT_IMAGES = 20_000
TARGET_RATIO = 1.20


def project(work: Path, raw: Path, enabled: bool) -> Path:
    """A folder the validate stage runs in: params.yaml with the benchmark's classes and the quality switch."""
    import yaml

    folder = work / ("quality_on" if enabled else "quality_off")
    folder.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["classes"] = CLASSES
    params["quality"]["enabled"] = enabled
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data").mkdir()
    (folder / "data" / "raw").symlink_to(raw)
    return folder


def validate(folder: Path, reuse: Path) -> dict[str, float]:
    shutil.rmtree(reuse, ignore_errors=True)
    return launch(folder, PY, str(REPO / "stages" / "validate.py"), env={"VISAPP_VALIDATE_CACHE": str(reuse)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vis-bench-") as tmp:
        work = Path(tmp)
        raw = generate_timed(work / "raw", args.images)
        folders = {True: project(work, raw, True), False: project(work, raw, False)}
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for enabled in (True, False) if repeat % 2 == 0 else (False, True):
                runs[enabled].append(validate(folders[enabled], work / "reuse"))
        report = json.loads((folders[True] / "data" / "validated" / "report.json").read_text())
        on, off = (statistics.median(run["seconds"] for run in runs[flag]) for flag in (True, False))
        result = {
            "images": args.images,
            "cores": os.cpu_count(),
            "seconds": {"quality_on": round(on, 2), "quality_off": round(off, 2)},
            "peak_mb": {
                "quality_on": round(max(run["peak_mb"] for run in runs[True]), 1),
                "quality_off": round(max(run["peak_mb"] for run in runs[False]), 1),
            },
            "ratio": round(on / off, 3),
            "by_code_quality_on": report["by_code"],
        }
    print(
        f"{result['images']} images, {result['cores']} cores (medians of {args.repeats})\n"
        f"  validate, quality on:  {on:7.2f} s  {result['peak_mb']['quality_on']:7.1f} MB peak\n"
        f"  validate, quality off: {off:7.2f} s  {result['peak_mb']['quality_off']:7.1f} MB peak\n"
        f"  ratio on/off: {result['ratio']} (target <= {TARGET_RATIO})\n"
        f"  report.json by_code with quality on: {result['by_code_quality_on']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
