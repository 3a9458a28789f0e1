"""validate + convert + metadata against what a user would otherwise run, and against the floor.

    .venv/bin/python benchmarks/data_stages.py [--images 2000] [--repeats 3] [--train] [--json FILE]

Generates a VOC dataset of N images (500x375 JPEGs, 1-4 objects of 3 classes, like Pascal VOC's), then runs,
alternating, `--repeats` times each, every measurement as a whole process (imports included):

1. reference: Ultralytics' own VOC path: `convert_label` from the installed Ultralytics' `VOC.yaml` over every
   XML, then `verify_image_label` over every image/label pair in a pool of Ultralytics' `NUM_THREADS`, as its
   data loader does before training;
2. ours: `stages/validate.py`, `stages/convert.py`, `stages/metadata.py` as DVC runs them (a process pool over
   the cores, every image decoded, every check done), with an empty reuse store; each stage's output is
   deleted before it runs, untimed, as `dvc repro` deletes it (the reference, too, writes into a new folder);
3. floor: one pass reading and hashing every byte, plus a reduced-size decode of every image, in a pool over
   the cores: no check can be cheaper;
4. revalidation after adding 1% new images, reusing the earlier outcomes (`.cache/validate`), against a full
   validation of the same files;
5. a no-op `dvc repro metadata` on the up-to-date pipeline (a DVC project of this repository's dvc.yaml,
   stages and library, with the dataset in data/raw): what every rerun on an unchanged dataset costs;
6. with `--train`: the train stage against plain `yolo detect train` with the same arguments on the same data
   (CPU, 1 epoch, imgsz 64, on the same images).

Peak memory is the largest process's peak RSS of each stage. It prints a table (medians, ratios) and writes
it as JSON. Targets: ours <= 0.5x the reference (1.0x acceptable), <= 2x the floor, revalidation <= 0.15x,
each data stage < 300 MB, train overhead <= 1.05x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CLASSES = ["circle", "square", "triangle"]
# Runs a command and prints its wall time and the peak RSS of the largest process it started.
LAUNCHER = (
    "import resource, subprocess, sys, time, json\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[2:], cwd=sys.argv[1]).returncode\n"
    "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t,"
    " 'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)

REFERENCE = """
import sys, xml.etree.ElementTree as ET, yaml as pyyaml
from multiprocessing.pool import ThreadPool
from pathlib import Path
import ultralytics
from ultralytics.data.utils import verify_image_label
from ultralytics.utils import NUM_THREADS
root, names = Path(sys.argv[1]), sys.argv[2].split(",")
recipe = pyyaml.safe_load((Path(ultralytics.__file__).parent / "cfg/datasets/VOC.yaml").read_text())["download"]
code = recipe[recipe.index("def convert_label"):recipe.index("# Download")]
scope = {"ET": ET, "Path": Path, "yaml": {"names": dict(enumerate(names))}}
exec(code, scope)
labels = root / "labels"; labels.mkdir()
ids = sorted(p.stem for p in (root / "VOC/Annotations").glob("*.xml"))
for image_id in ids:
    scope["convert_label"](root, labels / f"{image_id}.txt", "", image_id)
images = [str(root / "VOC/JPEGImages" / f"{i}.jpg") for i in ids]
args = [(im, str(labels / f"{i}.txt"), "", False, len(names), 0, 0, False) for im, i in zip(images, ids)]
with ThreadPool(NUM_THREADS) as pool:
    results = list(pool.imap(verify_image_label, args))
bad = sum(1 for r in results if r[0] is None)
assert bad == 0, f"{bad} pairs rejected by Ultralytics"
"""

FLOOR = """
import hashlib, os, sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import cv2, numpy as np
def one(path):
    data = Path(path).read_bytes()
    hashlib.sha256(data).hexdigest()
    if path.endswith(".jpg"):
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8) is not None
    return len(data)
root = Path(sys.argv[1])
files = sorted(str(p) for p in root.rglob("*") if p.is_file())
with ProcessPoolExecutor(os.cpu_count()) as pool:
    total = sum(pool.map(one, files, chunksize=64))
"""


def generate(raw: Path, images: int, start: int = 0, seed: int = 0) -> None:
    """VOC-like samples: 500x375 JPEGs (noise and filled shapes) with 1-4 boxes each."""
    import cv2
    import numpy as np

    from visapp.formats.voc import VocObject, annotation_xml

    rng = random.Random(seed + start)
    (raw / "Annotations").mkdir(parents=True, exist_ok=True)
    (raw / "JPEGImages").mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(seed).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    for n in range(start, start + images):
        image = np.roll(base, n * 7, axis=1).copy()
        objects = []
        for _ in range(rng.randint(1, 4)):
            w, h = rng.randint(30, 200), rng.randint(30, 200)
            x, y = rng.randint(0, 499 - w), rng.randint(0, 374 - h)
            cv2.rectangle(image, (x, y), (x + w, y + h), (rng.randint(0, 255), 80, 160), -1)
            box = {"xmin": x + 1, "ymin": y + 1, "xmax": x + w, "ymax": y + h}
            objects.append(VocObject(rng.choice(CLASSES), difficult=False, bndbox=box))
        _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        name = f"{n:07d}"
        (raw / "JPEGImages" / f"{name}.jpg").write_bytes(jpeg.tobytes())
        (raw / "Annotations" / f"{name}.xml").write_text(annotation_xml(f"{name}.jpg", 500, 375, objects))


def generate_timed(raw: Path, images: int) -> Path:
    """`generate`, saying how long it took (on stderr: the results go to stdout); the folder."""
    started = time.perf_counter()
    generate(raw, images)
    print(f"generated {images} images in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return raw


def launch(cwd: Path, *command: str, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run([PY, "-c", LAUNCHER, str(cwd), *command], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result['rc']}):\n{proc.stderr[-3000:]}")
    return result


def project(work: Path, raw: Path) -> Path:
    """A folder the stage scripts run in: params.yaml with the benchmark's classes, data/raw -> the dataset."""
    import yaml

    folder = work / "project"
    folder.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["classes"] = CLASSES
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data").mkdir()
    (folder / "data" / "raw").symlink_to(raw)
    return folder


def ours(folder: Path, reuse: Path) -> dict[str, float]:
    env = {"VISAPP_VALIDATE_CACHE": str(reuse)}
    total = {"seconds": 0.0, "peak_mb": 0.0}
    for stage, out in (("validate", "validated"), ("convert", "yolo"), ("metadata", "metadata")):
        shutil.rmtree(folder / "data" / out, ignore_errors=True)  # as `dvc repro` does before it runs a stage
        step = launch(folder, PY, str(REPO / "stages" / f"{stage}.py"), env=env)
        total[f"{stage}_seconds"] = step["seconds"]
        total[f"{stage}_peak_mb"] = step["peak_mb"]
        total["seconds"] += step["seconds"]
        total["peak_mb"] = max(total["peak_mb"], step["peak_mb"])
    return total


def reference(work: Path, raw: Path) -> dict[str, float]:
    folder = work / "reference"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "VOC").symlink_to(raw)
    return launch(folder, PY, "-c", REFERENCE, str(folder), ",".join(CLASSES))


def median(runs: list[dict[str, float]], key: str = "seconds") -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also time the train stage against `yolo detect train`")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vis-bench-") as tmp:
        work = Path(tmp)
        raw = generate_timed(work / "raw", args.images)
        folder = project(work, raw)
        runs: dict[str, list[dict[str, float]]] = {"reference": [], "ours": [], "floor": []}
        for repeat in range(args.repeats):
            order = ["reference", "ours", "floor"] if repeat % 2 == 0 else ["floor", "ours", "reference"]
            for name in order:
                if name == "reference":
                    runs[name].append(reference(work, raw))
                elif name == "ours":
                    shutil.rmtree(work / "reuse", ignore_errors=True)
                    runs[name].append(ours(folder, work / "reuse"))
                else:
                    runs[name].append(launch(work, PY, "-c", FLOOR, str(raw)))
        # Revalidation: 1% new images, against a full validation of the same files.
        generate(raw, max(1, args.images // 100), start=args.images, seed=1)
        validate = [PY, str(REPO / "stages" / "validate.py")]
        again = launch(folder, *validate, env={"VISAPP_VALIDATE_CACHE": str(work / "reuse")})
        shutil.rmtree(work / "fresh", ignore_errors=True)
        full = launch(folder, *validate, env={"VISAPP_VALIDATE_CACHE": str(work / "fresh")})
        result = {
            "images": args.images,
            "cores": os.cpu_count(),
            "seconds": {name: round(median(r), 2) for name, r in runs.items()},
            "stage_seconds": {
                s: round(median(runs["ours"], f"{s}_seconds"), 2) for s in ("validate", "convert", "metadata")
            },
            "stage_peak_mb": {
                s: round(max(r[f"{s}_peak_mb"] for r in runs["ours"]), 1) for s in ("validate", "convert", "metadata")
            },
            "reference_peak_mb": round(max(r["peak_mb"] for r in runs["reference"]), 1),
            "revalidate_seconds": round(again["seconds"], 2),
            "full_validate_seconds": round(full["seconds"], 2),
        }
        result["ratio_to_reference"] = round(result["seconds"]["ours"] / result["seconds"]["reference"], 2)
        result["ratio_to_floor"] = round(result["seconds"]["ours"] / result["seconds"]["floor"], 2)
        result["revalidate_ratio"] = round(again["seconds"] / full["seconds"], 3)
        result["noop_repro_seconds"] = noop_repro(work, raw, args.repeats)
        if args.train:
            result["train"] = train_overhead(work, folder)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def noop_repro(work: Path, raw: Path, repeats: int) -> float:
    """Median seconds of `dvc repro metadata` when nothing changed, in a DVC project of this repository's
    pipeline (its files copied, the dataset hard-linked into data/raw), after one run that brings it up to date."""
    import yaml

    folder = work / "dvc_project"
    for name in ("stages", "src", "conf"):
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "dvc.yaml", folder / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["classes"] = CLASSES
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(raw, folder / "data" / "raw", copy_function=os.link)
    dvc = str(Path(PY).parent / "dvc")
    env = {
        "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}",
        "VISAPP_VALIDATE_CACHE": str(work / "dvc_reuse"),
    }
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=folder, check=True)
    launch(folder, dvc, "repro", "-q", "metadata", env=env)
    return round(statistics.median(launch(folder, dvc, "repro", "-q", "metadata", env=env)["seconds"]
                                   for _ in range(repeats)), 2)  # fmt: skip


def train_overhead(work: Path, folder: Path, repeats: int = 2) -> dict[str, float]:
    """The train stage against `yolo detect train` with the same arguments (the library's `train_args`, so the
    two cannot drift apart), on the same (exported) data; the best of `repeats` runs each, alternating."""
    import yaml

    from visapp.config import load_params
    from visapp.training.run import train_args

    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"].update(epochs=1, imgsz=64, batch=8, workers=0, device="cpu")
    params["tracking"]["required"] = False
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    export = work / "export"
    subprocess.run([str(Path(PY).parent / "visapp"), "export-yolo", str(export)], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip
    args = train_args(load_params(folder / "params.yaml"), export / "data.yaml", work / "plain", "cpu")
    plain = [str(Path(PY).parent / "yolo"), "detect", "train", f"model={params['model']['arch']}",
             *(f"{key}={value}" for key, value in args.items())]  # fmt: skip
    # YOLO_CONFIG_DIR: plain `yolo` writes its settings file there, not in the home folder.
    env = {"YOLO_OFFLINE": "true", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "VISAPP_CHECKPOINT_DIR": str(work / "ckpt"), "YOLO_CONFIG_DIR": str(work / "yolo_config")}  # fmt: skip
    stage, baseline = [], []
    for repeat in range(repeats):
        shutil.rmtree(work / "ckpt", ignore_errors=True)
        for name in ["stage", "plain"] if repeat % 2 == 0 else ["plain", "stage"]:
            if name == "stage":
                stage.append(launch(folder, PY, str(REPO / "stages" / "train.py"), env=env)["seconds"])
            else:
                baseline.append(launch(work, *plain, env=env)["seconds"])
    return {"stage_seconds": round(min(stage), 1), "plain_seconds": round(min(baseline), 1),
            "ratio": round(min(stage) / min(baseline), 3)}  # fmt: skip


def table(result: dict) -> str:
    s = result["seconds"]
    lines = [
        f"{result['images']} images, {result['cores']} cores (medians)",
        f"  reference (Ultralytics convert_label + verify_image_label): {s['reference']:7.2f} s",
        f"  ours (validate + convert + metadata, whole processes):      {s['ours']:7.2f} s"
        f"  = {result['ratio_to_reference']}x reference, {result['ratio_to_floor']}x floor",
        f"  floor (read + hash + reduced decode, all cores):            {s['floor']:7.2f} s",
        "  stages: "
        + ", ".join(f"{k} {v} s / {result['stage_peak_mb'][k]} MB" for k, v in result["stage_seconds"].items()),
        f"  revalidation after +1% images: {result['revalidate_seconds']} s vs {result['full_validate_seconds']} s "
        f"full = {result['revalidate_ratio']}x",
        f"  no-op `dvc repro metadata` on the up-to-date pipeline: {result['noop_repro_seconds']} s",
    ]
    if "train" in result:
        t = result["train"]
        lines.append(
            f"  train stage {t['stage_seconds']} s vs yolo detect train {t['plain_seconds']} s = {t['ratio']}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
