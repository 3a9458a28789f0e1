"""Does the label audit find planted label errors? Precision at k against the random ranking.

    .venv/bin/python benchmarks/audit_planted.py [--weights models/yolo/weights/best.pt] [--images 600] [--seeds 3]
        [--confidence F] [--high-confidence F]

Images the model never saw: the built-in sample's generator gives the same first 200 images (the demo's
dataset, which the model trained on) and then new ones; images 200 to `--images` are checked by the data stages
in a scratch folder (all of them val or test). In their converted labels, 3% of the boxes are removed, 3% get
another class and 3% are shifted by half their size; the audit (`visapp.training.audit.audit`, as the evaluate
stage runs it) then ranks every image. k is the number of images with a planted error; precision at k is the
share of them among the k images ranked worst, and the random ranking's expected precision is k over the images.
A clean run (nothing planted) shows what the audit's top findings are on correct labels.

Target: precision at k >= 0.6 with a model of val mAP50 >= 0.9, and at least twice the random ranking's.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RATE = 0.03
SEEN = 200  # the demo's sample: the images the model trained on


def plant(yolo_dir: Path, seed: int, classes: int) -> set[str]:
    """Plant errors in the val and test labels; the label files (relative to yolo_dir) that got one."""
    rng = random.Random(seed)
    boxes = []  # (file, line index)
    lines: dict[Path, list[str]] = {}
    for path in sorted([*(yolo_dir / "labels").glob("val/*.txt"), *(yolo_dir / "labels").glob("test/*.txt")]):
        lines[path] = path.read_text().splitlines()
        boxes += [(path, index) for index in range(len(lines[path]))]
    chosen = rng.sample(boxes, k=min(len(boxes), round(3 * RATE * len(boxes))))
    third = len(chosen) // 3
    planted: set[str] = set()
    removed: dict[Path, set[int]] = {}
    for number, (path, index) in enumerate(chosen):
        cls, cx, cy, w, h = lines[path][index].split()
        if number < third:  # a box the labeller missed
            removed.setdefault(path, set()).add(index)
        elif number < 2 * third:  # a wrong class
            other = rng.choice([c for c in range(classes) if c != int(cls)])
            lines[path][index] = f"{other} {cx} {cy} {w} {h}"
        else:  # a misplaced box: moved by half its size, kept inside the image
            nx = min(max(float(cx) + float(w) / 2, float(w) / 2), 1 - float(w) / 2)
            ny = min(max(float(cy) + float(h) / 2, float(h) / 2), 1 - float(h) / 2)
            lines[path][index] = f"{cls} {nx:.6f} {ny:.6f} {w} {h}"
        planted.add(path.relative_to(yolo_dir).as_posix())
    for path, kept in lines.items():
        gone = removed.get(path, set())
        path.write_text("".join(f"{line}\n" for i, line in enumerate(kept) if i not in gone))
    return planted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="models/yolo/weights/best.pt")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--confidence", type=float, help="the audit's confidence floor (default: conf's audit.confidence)"
    )
    parser.add_argument(
        "--high-confidence", type=float, help="cleanlab's sure-prediction threshold (default: audit.high_confidence)"
    )
    args = parser.parse_args()
    weights = Path(args.weights).resolve()
    if not weights.is_file():
        print(f"{weights} not found: train first (`make demo`)", file=sys.stderr)
        return 2
    from visapp.composition import applicable_raw
    from visapp.config import to_params
    from visapp.dataset.pipeline import run_data_stages
    from visapp.formats.voc_ids import sample_id
    from visapp.formats.yolo import label_relpath
    from visapp.training.audit import audit

    with tempfile.TemporaryDirectory(prefix="vis-audit-") as tmp:
        scratch = Path(tmp)
        subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(scratch / "all"), "--images",
                        str(args.images)], check=True, capture_output=True)  # fmt: skip
        raw = scratch / "raw"
        for folder in ("Annotations", "JPEGImages"):
            (raw / folder).mkdir(parents=True)
            for path in sorted((scratch / "all" / folder).iterdir())[SEEN:]:
                shutil.copy(path, raw / folder / path.name)
        params = applicable_raw(".")
        params["paths"] = {key: str(scratch / key) for key in ("raw", "validated", "yolo", "metadata", "model")}
        params["paths"]["checked"] = str(scratch / "checked")
        params["data"]["split"] = {"train": 0.01, "val": 0.5, "test": 0.49}  # all but a few: held out
        if args.confidence is not None:
            params["audit"]["confidence"] = args.confidence
        if args.high_confidence is not None:
            params["audit"]["high_confidence"] = args.high_confidence
        checked = to_params(params)
        run_data_stages(checked)
        clean = audit(checked, weights)
        results = []
        for seed in range(args.seeds):
            yolo = scratch / f"yolo-{seed}"
            shutil.copytree(scratch / "yolo", yolo)
            planted = plant(yolo, seed, len(checked.data.classes))
            seeded = dict(params, paths={**params["paths"], "yolo": str(yolo)})
            found = audit(to_params(seeded), weights)
            labels = [label_relpath(f.split, sample_id(f.image)) for f in found.findings]
            k = len(planted)
            hits = sum(1 for label in labels[:k] if label in planted)
            results.append({"seed": seed, "images": len(labels), "k": k, "precision_at_k": round(hits / k, 3),
                            "random": round(k / len(labels), 3)})  # fmt: skip
    top = [{"image": f.image, "kind": f.kind, "score": f.score} for f in clean.findings[:5]]
    precision = statistics.mean(r["precision_at_k"] for r in results)
    rand = statistics.mean(r["random"] for r in results)
    report = {"weights": str(args.weights), "runs": results, "mean_precision_at_k": round(precision, 3),
              "mean_random": round(rand, 3), "ratio_to_random": round(precision / rand, 2),
              "clean_top_findings": top}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0 if precision >= 2 * rand else 1


if __name__ == "__main__":
    sys.exit(main())
