"""Two models on one test split: the per-class table of `visapp compare`, and the release gate of `--stage prod`.

Both models are evaluated by the evaluate stage's function (`visapp.training.evaluate.evaluate_weights`) on the
same, current held-out split of the workspace, so their figures compare; the figures a version's tag recorded
came from its own dataset version and would not. The gate refuses a candidate whose mAP50-95 is more than
`release.max_drop` below prod's, or any class's AP50-95 more than `release.max_class_drop` below, and names them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from visapp.config import Params, ReleaseConfig
from visapp.errors import VisError
from visapp.training.evaluate import Evaluation, evaluate_weights

WORKSPACE = "workspace"  # the model in the workspace (models/yolo/weights/best.pt), in `visapp compare`
HEADLINE = "mAP50-95"


@dataclass
class Compared:
    """Two evaluations on one split, A then B."""

    a: str
    b: str
    first: Evaluation
    second: Evaluation

    def drops(self) -> tuple[float, dict[str, float]]:
        """How much B loses against A: overall, and per class (negative: B is better)."""
        overall = self.first.overall[HEADLINE] - self.second.overall[HEADLINE]
        per_class = {
            name: float(self.first.classes[name][HEADLINE]) - float(self.second.classes.get(name, {}).get(HEADLINE, 0))
            for name in self.first.classes
        }
        return overall, per_class


def weights_of(root: Path, ref: str, folder: Path, params: Params) -> Path:
    """A model's weights: the workspace's, or a version's (`yolo@v2.0.0`, `yolo#prod`) fetched into `folder`."""
    if ref == WORKSPACE:
        found = root / params.paths.model / "weights" / "best.pt"
        if not found.is_file():
            raise VisError(f"{found} not found: train (`dvc repro`) or `dvc pull` it")
        return found
    from visapp.registry.versions import get_model

    return get_model(root, ref, folder / f"{ref.replace('/', '_').replace('#', '_')}.pt")


def compare_models(root: Path, params: Params, a: str, b: str) -> Compared:
    """Evaluate two models (refs of `weights_of`) on the workspace's current held-out split."""
    with tempfile.TemporaryDirectory(prefix="visapp-compare-") as tmp:
        first = evaluate_weights(params, weights_of(root, a, Path(tmp), params))
        second = evaluate_weights(params, weights_of(root, b, Path(tmp), params))
    return Compared(a, b, first, second)


def refusals(compared: Compared, limits: ReleaseConfig) -> list[str]:
    """Why B (the candidate) may not replace A (prod): each drop past its limit, with the figures."""
    overall, per_class = compared.drops()
    found = []
    if overall > limits.max_drop:
        found.append(
            f"{HEADLINE} {compared.second.overall[HEADLINE]:.4f} against {compared.first.overall[HEADLINE]:.4f} "
            f"(-{overall:.4f}, more than release.max_drop {limits.max_drop:g})"
        )
    worse = {name: drop for name, drop in per_class.items() if drop > limits.max_class_drop}
    for name, drop in sorted(worse.items(), key=lambda item: -item[1]):
        before = float(compared.first.classes[name][HEADLINE])
        after = before - drop
        found.append(
            f"class {name!r}: AP50-95 {after:.4f} against {before:.4f} (-{drop:.4f}, more than "
            f"release.max_class_drop {limits.max_class_drop:g})"
        )
    return found


def format_compared(compared: Compared) -> str:
    """The per-class table of both models: AP50-95 and AP50 of each, the difference, the objects of the split."""
    first, second = compared.first, compared.second
    head = (
        f"{compared.a} (A) vs {compared.b} (B) on the {first.split} split: {first.images} images, "
        f"{first.objects} objects" + (f" ({first.note})" if first.note else "")
    )
    rows = [("class", "objects", "A AP50-95", "B AP50-95", "B - A", "A AP50", "B AP50")]
    for name, a_class in [*first.classes.items(), ("all", {**first.overall, "objects": first.objects})]:
        b_class = second.overall if name == "all" else second.classes.get(name, {})
        a_ap, b_ap = float(a_class.get(HEADLINE, 0)), float(b_class.get(HEADLINE, 0))
        a50, b50 = float(a_class.get("mAP50", 0)), float(b_class.get("mAP50", 0))
        objects = str(a_class.get("objects", ""))
        rows.append((name, objects, f"{a_ap:.4f}", f"{b_ap:.4f}", f"{b_ap - a_ap:+.4f}", f"{a50:.4f}", f"{b50:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [_row(row, widths) for row in rows]
    return "\n".join([head, "", *table])


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    """The class name to the left, the numbers to the right."""
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
