"""Huge images cost bounded memory: `visapp check` and the metadata stage on a 13,000 x 13,000 PNG (169 MP) and
an 80 MP JPEG stay under 300 MB peak RSS and print no warning (benchmarks/huge_images.py measures the same).

Each command runs from a small launcher process (`measured`): a child's `ru_maxrss` starts at its parent's peak,
so measured straight from pytest it would report pytest's own.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from benchmarks.huge_images import (
    CLASSES,
    RAISED_LIMIT,
    check_command,
    measured,
    write_dataset,
    write_raised_params,
)

from visapp.composition import default_params
from visapp.dataset.convert import convert
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.manifest import MANIFEST_FILE

pytestmark = pytest.mark.integration  # no training (`slow` means one): huge images, each command in a process

BUDGET_MB = 300.0


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/ (huge.png, bilevel.png: 13,000 x 13,000; photo.jpg: 10,328 x 7,760; each annotated), raised/params.yaml
    (data.max_image_pixels 200,000,000), and validate's and convert's outputs for raw/ under that limit."""
    root = tmp_path_factory.mktemp("huge-images")
    write_dataset(root / "raw")
    write_raised_params(root / "raised")
    data = dataclasses.replace(default_params().data, classes=CLASSES, max_image_pixels=RAISED_LIMIT)
    result = validate_dataset(root / "raw", data)
    assert result.report["accepted"] == 3, result.report["issues"]
    write_validation(result, root / "validated", "fail")
    convert(root / "validated" / MANIFEST_FILE, root / "raw", root / "yolo", data, seed=0)
    return root


def _within_budget(result: dict) -> None:
    assert result["peak_mb"] < BUDGET_MB, f"peak RSS {result['peak_mb']:.0f} MB\n{result['stderr'][-2000:]}"
    assert "DecompressionBombWarning" not in result["stderr"]
    assert "Warning" not in result["stderr"], result["stderr"][-2000:]


def test_check_refuses_the_pngs_from_their_header_and_decodes_the_jpeg_reduced(huge):
    result = measured(check_command(huge / "raw"), cwd=huge)
    _within_budget(result)
    assert result["rc"] == 1, result["stdout"] + result["stderr"]
    assert "1 accepted, 2 rejected" in result["stdout"]
    assert "image_too_large 2" in result["stdout"]


def test_check_with_the_limit_raised_checks_every_image_in_bounded_memory(huge):
    result = measured(check_command(huge / "raw"), cwd=huge / "raised")
    _within_budget(result)
    assert result["rc"] == 0, result["stdout"] + result["stderr"]
    assert "3 accepted, 0 rejected" in result["stdout"]


def test_metadata_draws_the_jpeg_reduced_and_passes_over_the_pngs(huge):
    code = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from visapp.dataset.statistics import build_metadata\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "root = Path(sys.argv[1])\n"
        "meta = build_metadata(root / 'validated' / 'manifest.jsonl', root / 'yolo', root / 'raw',\n"
        "                      root / 'metadata', sys.argv[2].split(','))\n"
        "assert meta['overall']['images'] == 3, meta\n"
    )
    result = measured([sys.executable, "-c", code, huge, ",".join(CLASSES)])
    _within_budget(result)
    assert result["rc"] == 0, result["stderr"]
    assert "passes over 2 image(s)" in result["stderr"]
    assert "huge.png (13000x13000 PNG)" in result["stderr"]
    from PIL import Image

    with Image.open(huge / "metadata" / "samples.png") as grid:
        white = grid.convert("L").histogram()[255]
        assert white < 0.8 * grid.width * grid.height  # the JPEG is drawn (a grid without it is nearly all white)
