"""A VOC image path -> its sample id (the name its YOLO label file takes), and an id as an ImageSets list
writes it -> the same form. The two meet when a list names a sample.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

from visapp.formats.image_formats import has_image_suffix
from visapp.fsio import is_plain_relpath

IMAGE_DIRS = ("jpegimages", "images")  # in this order of preference when an id would collide


def strip_suffix(rel: str) -> str:
    """The path without its extension, as PurePosixPath's `suffix` defines it (`.bashrc` and `a.` have none)."""
    path = rel if is_plain_relpath(rel) else str(PurePosixPath(rel))
    folder, slash, name = path.rpartition("/")
    dot = name.rfind(".")
    return folder + slash + name[:dot] if 0 < dot < len(name) - 1 else rel


def sample_id(image_relpath: str) -> str:
    """The sample's id (its label file's name): the image path without extension and leading image folder.

    "JPEGImages/000001.jpg" -> "000001", "images/a/b.png" -> "a/b", "sub/a.png" -> "sub/a".
    """
    if not is_plain_relpath(image_relpath):
        image_relpath = str(PurePosixPath(image_relpath))
    head, slash, rest = image_relpath.partition("/")
    if slash and rest and head.lower() in IMAGE_DIRS:
        image_relpath = rest
    return strip_suffix(image_relpath)


def listed_id(word: str) -> str:
    """An id as an ImageSets list writes it, in the form `sample_id` gives: Unicode NFC, without a leading
    image folder or an image extension (`JPEGImages/000001.jpg` -> `000001`; `img.v2` stays)."""
    ident = unicodedata.normalize("NFC", word.strip().removeprefix("./"))
    head, _, rest = ident.partition("/")
    if rest and head.lower() in IMAGE_DIRS:
        ident = rest
    return ident[: ident.rfind(".")] if has_image_suffix(ident) else ident
