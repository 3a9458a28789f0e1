"""Figures: class names in any script drawn without glyph warnings, example images decoded within a memory budget."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from PIL import Image

from visapp.dataset import figure_fonts, figure_images, figures
from visapp.dataset.figures import Example
from visapp.formats.yolo import Box

pytestmark = pytest.mark.unit

CJK = ["cat", "猫", "신호등"]


@pytest.fixture
def fonts(monkeypatch: pytest.MonkeyPatch):
    """Font choices made afresh for the test (they are cached per class list), and their log notes seen."""
    figure_fonts._class_labels.cache_clear()
    monkeypatch.setattr(logging.getLogger("visapp"), "propagate", True)
    yield
    figure_fonts._class_labels.cache_clear()


@pytest.fixture
def no_cjk_font(fonts, monkeypatch: pytest.MonkeyPatch):
    """A machine whose only fonts are matplotlib's own (none of them has CJK glyphs)."""
    monkeypatch.setattr(figure_fonts, "_installed_fonts", lambda: ())


def _metadata(classes: list[str]) -> dict:
    per_class = dict.fromkeys(classes, 1)
    split = {"objects": len(classes), "images": 1, "background_images": 0}
    return {
        "classes": [{"id": i, "name": name} for i, name in enumerate(classes)],
        "splits": {"train": {**split, "objects_per_class": per_class, "images_per_class": per_class}},
    }


def _draw_all(classes: list[str], folder: Path) -> None:
    boxes = figures.BoxData()
    boxes.add([Box(i, 0.5, 0.5, 0.2, 0.3) for i in range(len(classes))], 640, 480)
    Image.new("RGB", (640, 480), "grey").save(folder / "grey.jpg")
    shown = tuple(Box(i, 0.2 + 0.25 * i, 0.5, 0.1, 0.2) for i in range(len(classes)))
    example = Example("train", "grey", 640, 480, 1, folder / "grey.jpg", shown)
    figures.plot_class_distribution(_metadata(classes), folder / "class_distribution.png")
    figures.plot_box_sizes(boxes, classes, folder / "box_sizes.png")
    figures.draw_examples([example], classes, folder / "samples.png")


def test_cjk_class_names_without_a_cjk_font_are_drawn_escaped_without_warnings(no_cjk_font, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="visapp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _draw_all(CJK, tmp_path)
    assert [str(w.message) for w in caught] == []
    assert figure_fonts.class_labels(CJK).texts == ("cat", "\\u732b", "\\uc2e0\\ud638\\ub4f1")
    notes = [r.getMessage() for r in caplog.records if "no installed font" in r.getMessage()]
    assert len(notes) == 1, "one note in the log, however many figures"
    assert '"猫" as \\u732b' in notes[0] and "Noto Sans CJK" in notes[0]


def test_names_dejavu_sans_has_are_drawn_as_written(fonts, tmp_path):
    names = ["cat", "кошка", "café", "γάτα"]
    labels = figure_fonts.class_labels(names)
    assert labels.texts == tuple(names)
    assert labels.fonts[0] is None, "ASCII names keep Pillow's default font: the figures do not change"
    assert all(font is not None and font[0].endswith("DejaVuSans.ttf") for font in labels.fonts[1:])
    assert labels.rc == {}, "matplotlib's default style draws them"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _draw_all(names, tmp_path)
    assert [str(w.message) for w in caught] == []


def test_a_name_only_another_installed_font_has_is_drawn_with_it(fonts, tmp_path):
    # U+2316 POSITION INDICATOR: not in DejaVu Sans, but in STIX (bundled with matplotlib, like DejaVu Sans).
    name = "⌖target"
    labels = figure_fonts.class_labels(["cat", name])
    assert labels.texts == ("cat", name)
    path, index = labels.fonts[1]
    assert not path.endswith("DejaVuSans.ttf") and 0x2316 in figure_fonts._charmap(path, index)
    assert labels.rc["font.family"][0] == "DejaVu Sans" and len(labels.rc["font.family"]) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _draw_all(["cat", name], tmp_path)
    assert [str(w.message) for w in caught] == []


def test_a_cjk_font_is_used_when_one_is_installed(fonts):
    installed = figure_fonts._installed_fonts()
    if not any({0x732B, 0xC2E0} <= figure_fonts._charmap(path, index) for path, index, _ in installed):
        pytest.skip("no installed font has CJK and Hangul glyphs (e.g. Noto Sans CJK)")
    labels = figure_fonts.class_labels(CJK)
    assert labels.texts == tuple(CJK)
    assert labels.families


def test_the_placeholder_font_is_never_chosen(fonts):
    assert not any(family.startswith("Last Resort") for _, _, family in figure_fonts._installed_fonts())


def test_an_image_too_large_to_decode_within_the_budget_is_left_out_of_the_grid(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="visapp")
    monkeypatch.setattr(logging.getLogger("visapp"), "propagate", True)
    Image.new("RGB", (64, 48), "red").save(tmp_path / "small.png")
    Image.new("RGB", (400, 300), "blue").save(tmp_path / "big.png")
    box = (Box(0, 0.5, 0.5, 0.5, 0.5),)
    big = Example("train", "big", 400, 300, 1, tmp_path / "big.png", box)
    small = Example("train", "small", 64, 48, 1, tmp_path / "small.png", box)
    monkeypatch.setattr(figure_images, "DRAW_MAX_BYTES", 4 * 64 * 48)
    assert figures._render_example(big, ["a"]) is None
    assert figures._render_example(small, ["a"]) is not None
    assert not figure_images.drawable("png", 400, 300)
    assert figure_images.drawable("jpeg", 400, 300)  # a JPEG decodes at 1/8
    figures.draw_examples([big, small], ["a"], tmp_path / "samples.png", count=1)
    assert any("leaves out 1 image(s)" in r.getMessage() and "train/big" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "P"), ("PNG", "RGBA")])
def test_large_images_are_decoded_reduced_and_turned_as_their_exif_says(tmp_path, fmt, mode):
    image = Image.new("RGB", (1800, 1200), "white")
    image.paste((255, 0, 0), (0, 0, 600, 400))  # the top-left corner, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: the red corner comes to the top right
    path = tmp_path / f"turned.{fmt.lower()}"
    image.convert(mode).save(path, fmt, exif=exif)
    example = Example("train", "turned", 1200, 1800, 6, path, ())
    shown, caption = figures._render_example(example, ["a"])
    assert shown.size == (200, 300)
    assert shown.getpixel((180, 20))[0] > 200 and shown.getpixel((180, 20))[1] < 60
    assert shown.getpixel((20, 280)) > (200, 200, 200)
    assert "MISMATCH" not in caption


def test_pillows_decompression_bomb_check_does_not_fire_and_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # below the image: Pillow would warn, and past 2x, raise
    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    example = Example("train", "a", 64, 48, 1, tmp_path / "a.png", (Box(0, 0.5, 0.5, 0.5, 0.5),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert figures._render_example(example, ["a"]) is not None
    assert [str(w.message) for w in caught] == []
    assert Image.MAX_IMAGE_PIXELS == 1000
