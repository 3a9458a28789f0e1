"""An image's bytes (their SHA-256) and the seed -> its split, when no ImageSets list gives one: a stable hash,
so adding images never moves an existing one, and byte-identical images always share a split. Convert assigns
the splits; validation's quality checks judge near-duplicate leaks by the same rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from visapp.config import SplitConfig
from visapp.formats import SPLITS

SplitRatios = SplitConfig | Mapping[str, float] | Sequence[float]  # train, val, test


def _ratios(ratios: SplitRatios) -> tuple[float, float, float]:
    if isinstance(ratios, SplitConfig):
        return (float(ratios.train), float(ratios.val), float(ratios.test))
    if isinstance(ratios, Mapping):
        values = [float(ratios.get(name, 0.0)) for name in SPLITS]
    else:
        values = [float(v) for v in ratios] + [0.0] * (3 - len(ratios))
    return (values[0], values[1], values[2])


def assign_split(image_sha256: str, seed: int, ratios: SplitRatios) -> str:
    """The split of an image, from a stable hash of (seed, SHA-256 of its bytes) and the split ratios.

    Each image's split depends only on its own bytes and the seed, so adding images never moves an existing
    image, and byte-identical images always share a split. `ratios` is a `SplitConfig`, a mapping with
    train/val/test keys, or a (train, val, test) tuple.
    """
    weights = _ratios(ratios)
    digest = hashlib.sha256(f"visapp-split:{seed}:{image_sha256.lower()}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    cumulative = 0.0
    for name, weight in zip(SPLITS, weights, strict=True):
        cumulative += weight
        if weight > 0 and u < cumulative:
            return name
    # Ratios that add up to slightly less than 1 leave a sliver: give it to the last split in use.
    return next(name for name, weight in reversed(list(zip(SPLITS, weights, strict=True))) if weight > 0)
