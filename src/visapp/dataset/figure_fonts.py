"""Class names -> how the figures draw them: with the first font that has all their glyphs, DejaVu Sans
(matplotlib's, always there), else an installed one (CJK names need one, e.g. Noto Sans CJK). A name that no
installed font can draw is drawn with `\\uXXXX` escapes for the missing characters, and the log says so once:
no glyph warnings, no boxes in place of letters.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType
    from PIL.ImageFont import FreeTypeFont
    from PIL.ImageFont import ImageFont as BitmapFont

DEFAULT_FONT_FAMILY = "DejaVu Sans"  # matplotlib's default, bundled with it
# Fonts that are never used for class names: Last Resort (bundled with recent matplotlib) "has" every
# character, as a placeholder box.
_PLACEHOLDER_FONTS = ("Last Resort",)
# Stored orientation -> the Pillow transpose that shows it (as `ImageOps.exif_transpose` does).

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassLabels:
    """How each class name is drawn: its text (escaped where no installed font has a glyph), the font file
    that has all its glyphs (None: the renderer's default font, for ASCII names), and the extra font families
    matplotlib falls back to after DejaVu Sans."""

    texts: tuple[str, ...]
    fonts: tuple[tuple[str, int] | None, ...]  # (font file, face index in it)
    families: tuple[str, ...]

    @property
    def rc(self) -> dict[RcKeyType, Any]:
        """matplotlib settings that draw these labels (none when DejaVu Sans has every glyph)."""
        return {"font.family": [DEFAULT_FONT_FAMILY, *self.families]} if self.families else {}


@functools.lru_cache(maxsize=64)
def _charmap(path: str, index: int = 0) -> frozenset[int]:
    """The characters a font file has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(path, face_index=index) if index else FT2Font(path)
        return frozenset(font.get_charmap())
    except Exception:  # a broken or unsupported font file: not a candidate
        return frozenset()


def _default_font() -> tuple[str, int]:
    """DejaVu Sans as bundled with matplotlib: the same file on every machine."""
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), 0


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> tuple[tuple[str, int, str], ...]:
    """(file, face index, family) of the fonts matplotlib knows, regular upright faces first, in a fixed order."""
    from matplotlib import font_manager

    def weight(entry: Any) -> int:
        value = entry.weight
        return value if isinstance(value, int) else font_manager.weight_dict.get(value, 400)

    entries = sorted(
        font_manager.fontManager.ttflist,
        key=lambda f: (f.style != "normal", f.stretch != "normal", abs(weight(f) - 400), f.name, f.fname),
    )
    return tuple(
        (entry.fname, getattr(entry, "index", 0), entry.name)
        for entry in entries
        if not entry.name.startswith(_PLACEHOLDER_FONTS)
    )


def _escaped(name: str, covered: frozenset[int]) -> str:
    return "".join(
        char if ord(char) in covered else (f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
        for char in name
    )


@functools.lru_cache(maxsize=16)
def _class_labels(classes: tuple[str, ...]) -> ClassLabels:
    texts: list[str] = []
    fonts: list[tuple[str, int] | None] = []
    families: list[str] = []
    escaped: list[str] = []
    default = _default_font()
    for name in classes:
        if name.isascii():
            texts.append(name)
            fonts.append(None)
            continue
        needed = {ord(char) for char in name}
        if needed <= _charmap(*default):
            texts.append(name)
            fonts.append(default)
            continue
        found = next(
            ((path, index, family) for path, index, family in _installed_fonts() if needed <= _charmap(path, index)),
            None,
        )
        if found is None:
            texts.append(_escaped(name, _charmap(*default)))
            fonts.append(default)
            escaped.append(f'"{name}" as {texts[-1]}')
            continue
        texts.append(name)
        fonts.append(found[:2])
        if found[2] not in families:
            families.append(found[2])
    if families:
        log.info("figures: class names drawn with the installed font(s) %s", ", ".join(families))
    if escaped:
        log.info(
            "figures: no installed font has every glyph of %d class name(s); they are drawn with escapes: %s "
            "(install a font that has them, e.g. Noto Sans CJK for Chinese, Japanese and Korean, to see them as "
            "written)",
            len(escaped),
            ", ".join(escaped),
        )
    return ClassLabels(tuple(texts), tuple(fonts), tuple(families))


def class_labels(classes: Sequence[str]) -> ClassLabels:
    """How the figures draw these class names (see the module docstring); the log notes a fallback once."""
    return _class_labels(tuple(classes))


@functools.lru_cache(maxsize=32)
def pillow_font(size: int, font: tuple[str, int] | None = None) -> FreeTypeFont | BitmapFont:
    """Pillow's bundled font (nothing to download), or a font file that has the glyphs of a class name."""
    from PIL import ImageFont

    if font is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(font[0], size, index=font[1])
