"""audit.json -> the table `visapp audit` prints: the likeliest label errors first, with the files a labeller opens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.training.audit import AUDIT_FILE

KIND_WORDS = {"missing_box": "a box is missing", "wrong_class": "wrong class", "misplaced_box": "misplaced box"}


def read_audit(model_dir: Path) -> dict[str, Any]:
    """The `audit.json` beside a model's weights; raises VisError, saying how to make it, when there is none."""
    path = Path(model_dir) / AUDIT_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisError(f"{path} not found: run the evaluate stage (`dvc repro evaluate`), or `dvc pull` it") from None
    except (OSError, ValueError) as exc:
        raise VisError(f"cannot read {path} ({exc}): rerun the evaluate stage (`dvc repro evaluate`)") from None
    return data


def _box(box: dict[str, Any] | None) -> str:
    if not box:
        return ""
    corners = ",".join(f"{v:g}" for v in box["xyxy"])
    confidence = f" {box['confidence']:.2f}" if "confidence" in box else ""
    return f"{box['class']}{confidence} [{corners}]"


def format_audit(audit: dict[str, Any], raw_dir: Path, top: int) -> str:
    """The first `top` findings as a table: rank, score, what looks wrong, the box involved, the image and its
    annotation (paths a labeller opens, under `raw_dir`)."""
    findings = audit["findings"][:top]
    # With audit.folds the train split is audited too, each image held out from the fold model that predicted it.
    splits = ", ".join(f"{split} out of fold" if split == "train" else split for split in audit["splits"])
    head = (
        f"label audit of {audit['images']} held-out images ({splits}): {audit['flagged']} "
        f"flagged by cleanlab; the {len(findings)} likeliest errors (score: lower is likelier)"
    )
    rows = [("#", "score", "flagged", "looks like", "box (class, confidence, xyxy px)", "image / annotation")]
    for rank, finding in enumerate(findings, start=1):
        files = str(raw_dir / finding["image"])
        if finding.get("annotation"):
            files += f"  {raw_dir / finding['annotation']}"
        rows.append((str(rank), f"{finding['score']:.4f}", "yes" if finding["issue"] else "",
                     KIND_WORDS.get(finding["kind"], "-"), _box(finding["box"]), files))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [head, ""]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)
