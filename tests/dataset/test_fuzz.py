"""Fuzz: hypothesis-generated XML and image bytes -> a parsed value or a reported issue, never an exception.

Structured VOC-ish trees with hostile values (huge, negative, NaN, inf, empty and non-numeric coordinates,
unicode, deep nesting, missing elements, random attributes), every encoding and BOM, DTDs and entities,
truncated and mutated documents, raw bytes; valid JPEG/PNG/BMP/WebP images cut short, bit-flipped, with a
wrong magic, lying headers or garbage EXIF; and whole tiny datasets of them. They go through
`voc.parse_annotation`, `images.inspect_image`, `validate.validate_dataset` (twice: the second run through
the reuse store, whatever the file names) and, for every accepted sample,
`convert.convert`, whose label lines must be valid YOLO. An image validation accepts must also be one that
OpenCV (Ultralytics' reader) decodes, in the size validation says; the regression tests at the end are the
cases the fuzzing found.

Every test is derandomized (the same examples on every run: CI is repeatable) and has no deadline; the
example counts add up to EXAMPLES_TOTAL (at least 2,000).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
import unicodedata
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from factory import MAX_PIXELS, data_config, image_bytes
from visapp.config import DataConfig
from visapp.dataset import reuse_store
from visapp.dataset.convert import convert
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats import SPLITS
from visapp.formats.image_formats import displayed_size, has_image_suffix, sniff_format
from visapp.formats.images import ImageError, ImageInfo, inspect_image
from visapp.formats.report import CODES, printable
from visapp.formats.voc import BOX_KEYS, Annotation, AnnotationError, VocObject, base_name, parse_annotation

pytestmark = pytest.mark.unit

# The only codes a report may hold, and their severities.
REPORT_SEVERITY = {code: entry.severity for code, entry in CODES.items()}
XML_CODES = {"xml_malformed", "xml_unsafe"}
IMAGE_CODES = {"image_unreadable", "image_truncated", "image_too_large"}
FORMATS = ("jpeg", "png", "bmp", "webp")
SUFFIX = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp"}
CLASSES = ["circle", "square", "triangle"]

EXAMPLES = {
    "structured_xml": 700,
    "raw_xml": 300,
    "images": 900,
    "datasets": 400,
}
EXAMPLES_TOTAL = sum(EXAMPLES.values())


def fuzz_settings(name: str) -> settings:
    """The same examples on every run, no deadline (CI machines vary), no example database on disk."""
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


def test_the_fuzz_tests_run_at_least_2000_inputs():
    assert EXAMPLES_TOTAL >= 2000


# ================================================================ XML documents

# Characters XML 1.0 allows; anything else makes a document not well-formed.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LEGAL_CHAR = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff") | st.sampled_from(
    "\t\n\r "
)
LEGAL_TEXT = st.text(_LEGAL_CHAR, max_size=12)
ANY_TEXT = st.text(max_size=12)  # may hold NUL, control characters, lone surrogates


def weighted(*choices: tuple[st.SearchStrategy, int]) -> st.SearchStrategy:
    """One of the strategies, picked with the given weights (st.one_of picks evenly)."""
    return st.sampled_from([s for s, weight in choices for _ in range(weight)]).flatmap(lambda s: s)


TEXT = weighted((LEGAL_TEXT, 9), (ANY_TEXT, 1))  # mostly well-formed, so that parsing gets past the bytes

HOSTILE_NUMBERS = [
    "", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e308", "-1e308", "1e-320",
    "-0", "0", "-1", "-999999999999", "99999999999999999999999", "0x10", "1_000", "1,5", "12px", " 7 ", "+3",
    "\u0661\u0662", "\uff11\uff12", "1e", "e5", ".", "-.5", "5.", "1.5e2", "9" * 400,
]  # fmt: skip
NUMBER_TEXT = st.one_of(
    st.integers(0, 70).map(str),  # inside a 64x48 image, often: samples get accepted
    st.floats(0, 70).map(lambda v: f"{v:.2f}"),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(HOSTILE_NUMBERS),
    LEGAL_TEXT,
)
FLAG_TEXT = st.sampled_from(["", "0", "1", "2", "-1", "true", "True", "yes", "no", "nan", "inf", "x", " 1 "])
# ASCII names: every encoding below can write them. Unicode goes into text and attribute values.
JUNK_TAGS = ["source", "owner", "part", "actions", "point", "segmented", "pose", "x", "a-b", "ns.c", "objects"]


@dataclass
class Node:
    tag: str
    text: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if quote else text


def render(node: Node) -> str:
    """Serialize without ElementTree, so that any text (illegal characters included) gets written."""
    attrs = "".join(f' {key}="{_escape(value, quote=True)}"' for key, value in node.attrs.items())
    body = _escape(node.text) + "".join(render(child) for child in node.children)
    return f"<{node.tag}{attrs}>{body}</{node.tag}>" if body else f"<{node.tag}{attrs}/>"


ATTRS = st.dictionaries(st.sampled_from(["id", "lang", "x", "verified", "Xmin"]), TEXT, max_size=2)


@st.composite
def junk_nodes(draw, depth: int = 0) -> Node:
    """Elements a VOC reader must ignore: <source>, <part> with its own <bndbox>, deep chains, random tags."""
    kind = draw(st.sampled_from(["leaf", "nested", "chain", "part"] if depth < 2 else ["leaf"]))
    node = Node(draw(st.sampled_from(JUNK_TAGS)), draw(TEXT), draw(ATTRS))
    if kind == "nested":
        node.children = draw(st.lists(junk_nodes(depth + 1), max_size=3))
    elif kind == "chain":  # deep nesting (ElementTree and our walk must not recurse into trouble)
        inner = node
        for _ in range(draw(st.integers(1, 300))):
            inner.children.append(Node("x"))
            inner = inner.children[0]
    elif kind == "part":
        node.tag = "part"
        node.children = [Node("name", "hand"), draw(bndbox_nodes())]
    return node


@st.composite
def bndbox_nodes(draw) -> Node:
    keys = draw(st.lists(st.sampled_from(BOX_KEYS), unique=True, max_size=4).map(list))
    if draw(st.integers(0, 3)):  # mostly all four
        keys = draw(st.permutations(BOX_KEYS))
    children = []
    for key in keys:
        tag = draw(st.sampled_from([key, key, key, key.upper(), key.capitalize()]))
        children.append(Node(tag, draw(NUMBER_TEXT), draw(ATTRS)))
    if draw(st.integers(0, 9)) == 0:  # a duplicated coordinate: the first one counts
        children.append(Node(draw(st.sampled_from(BOX_KEYS)), draw(NUMBER_TEXT)))
    return Node("bndbox", children=children)


NAME_TEXT = weighted(
    (st.sampled_from(CLASSES), 3),
    (st.sampled_from(CLASSES).map(lambda name: f"  {name}\n"), 1),
    (st.sampled_from(["", " ", "Circle", "circle ", "ci rcle", "\u0441ircle", "dog", "c\u0327ircle", "x" * 300]), 2),
    (TEXT, 2),
)


@st.composite
def object_nodes(draw) -> Node:
    children = []
    if draw(st.integers(0, 7)):
        children.append(Node("name", draw(NAME_TEXT), draw(ATTRS)))
    for tag in ("pose", "truncated", "difficult"):
        if draw(st.booleans()):
            children.append(Node(tag, draw(FLAG_TEXT)))
    if draw(st.integers(0, 7)):
        children.append(draw(bndbox_nodes()))
    children += draw(st.lists(junk_nodes(), max_size=2))
    tag = draw(st.sampled_from(["object"] * 6 + ["Object", "OBJECT"]))  # tags are matched without regard to case
    return Node(tag, children=draw(st.permutations(children)), attrs=draw(ATTRS))


# <filename> as Windows tools write it: a whole path (the base name pairs), any separator.
PATHS = st.builds(
    lambda folder, name: folder + name,
    st.sampled_from(["C:\\x\\", "D:\\export\\2021\\", "\\\\server\\share\\", "..\\", "C:/Users/me/", "/home/me/"]),
    st.sampled_from(["IMG_1.jpg", "a b.png", "\u6570\u636e.jpg", "Se\u00f1al.JPG"]),
)
# VOC's tags (matched without regard to case) and the spellings tools give them.
VOC_TAGS = frozenset(["filename", "folder", "size", "width", "height", "depth", "segmented", "object", "name"])
VOC_TAGS |= frozenset(["pose", "truncated", "difficult", "bndbox", *BOX_KEYS])
_CAMEL = {"filename": "FileName", "bndbox": "BndBox", "xmin": "XMin", "ymin": "YMin", "xmax": "XMax", "ymax": "YMax"}
TAG_CASES = st.sampled_from([str.lower] * 5 + [str.upper, str.capitalize, lambda tag: _CAMEL.get(tag, tag.title())])


def recase(node: Node, spell) -> None:
    """Spell every VOC tag of the tree (still in lower case) with `spell`, in place."""
    if node.tag in VOC_TAGS:
        node.tag = spell(node.tag)
    for child in node.children:
        recase(child, spell)


SIZE_VALUES = st.one_of(NUMBER_TEXT, st.sampled_from(["0", "64", "48", "64.0", "48.0", "-64"]))


@st.composite
def size_nodes(draw, width: str | None = None, height: str | None = None, keep: bool = False) -> Node:
    """<size>; with `keep`, mostly the given width and height (a dataset's samples should often pass)."""
    children = []
    for tag, value in (("width", width), ("height", height), ("depth", "3")):
        if draw(st.integers(0, 9 if keep else 6)):
            given_value = value is not None and draw(st.integers(0, 9 if keep else 1)) > 0
            children.append(Node(tag, value if given_value else draw(SIZE_VALUES)))
    return Node("size", children=draw(st.permutations(children)))


@dataclass
class Doc:
    """A generated annotation file and what a correct parser must make of it."""

    data: bytes
    expect: str  # "ok": must parse; "unsafe": xml_unsafe; "malformed": xml_malformed; "any": a parse or an issue
    objects: int = 0  # the number of direct <object> children, in any tag case (when expect == "ok")
    filename: str | None = None
    has_size: bool = False  # holds a <size> element (whatever its values)


IF_UTF8 = "if its bytes are UTF-8"


# (python codec, declared encoding or None for no declaration, BOM, honest): an honest (True) document must
# parse; a dishonest one (False) may parse or be reported; IF_UTF8: a code page written without saying so (or
# while declaring UTF-8) must parse when its bytes happen to be UTF-8 (ASCII text), else it is xml_malformed.
ENCODINGS = [
    ("utf-8", "utf-8", b"", True),
    ("utf-8", None, b"", True),
    ("utf-8", "", b"", True),  # a declaration without encoding="..."
    ("utf-8", "UTF-8", b"\xef\xbb\xbf", True),
    ("utf-8", None, b"\xef\xbb\xbf", True),
    ("utf-16-le", "UTF-16", b"\xff\xfe", True),
    ("utf-16-be", "utf-16", b"\xfe\xff", True),
    ("iso-8859-1", "ISO-8859-1", b"", True),
    ("ascii", "US-ASCII", b"", True),
    ("utf-8", "klingon", b"", False),
    ("utf-8", "UTF-16", b"", False),  # declared UTF-16, written UTF-8
    ("utf-16-le", "utf-8", b"", False),  # UTF-16 without a BOM
    ("utf-8", "UTF-16", b"\xef\xbb\xbf", False),  # UTF-8 BOM, UTF-16 declared
    ("utf-32", "UTF-32", b"", False),
    ("cp1252", "windows-1252", b"", True),
    ("shift_jis", "Shift_JIS", b"", True),  # multi-byte: decoded before expat sees it
    ("gbk", "GBK", b"", True),
    ("euc-kr", "EUC-KR", b"", True),
    ("big5", "Big5", b"", True),
    ("cp1252", None, b"", IF_UTF8),  # a code page without a declaration: xml_malformed unless it is ASCII
    ("cp1252", "UTF-8", b"", IF_UTF8),  # a code page declared as UTF-8
    ("shift_jis", None, b"", IF_UTF8),
    ("latin-1", "latin1", b"", True),  # Python's spelling (expat reads it through Python's codec)
    ("cp1251", "windows-1251", b"", True),
    ("cp1250", "windows-1250", b"", True),
    ("koi8-r", "KOI8-R", b"", True),
    ("iso8859-15", "ISO-8859-15", b"", True),
    ("cp437", "IBM437", b"", True),
    ("gb18030", "GB18030", b"", True),
    ("gb2312", "GB2312", b"", True),
    ("euc-jp", "EUC-JP", b"", True),
    ("iso2022_jp", "ISO-2022-JP", b"", True),  # stateful, 7-bit
    ("cp949", "CP949", b"", True),
    ("big5hkscs", "Big5-HKSCS", b"", True),
    ("utf-16-le", "UTF-16LE", b"\xff\xfe", True),
    ("utf-16-be", "UTF-16BE", b"\xfe\xff", True),
    ("utf-8", "utf8", b"", True),  # what ElementTree writes for tree.write(f, encoding="utf8"): expat lacks it
    ("utf-8", "UTF8", b"\xef\xbb\xbf", True),
    ("utf-16-le", "utf16", b"\xff\xfe", True),
    ("utf-16-be", "utf16", b"\xfe\xff", True),
]

DOCTYPES = [
    "<!DOCTYPE annotation>",
    '<!DOCTYPE annotation SYSTEM "voc.dtd">',
    '<!DOCTYPE annotation PUBLIC "-//VOC//EN" "http://example.invalid/voc.dtd">',
    '<!DOCTYPE annotation [<!ENTITY who "me">]>',
    '<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE annotation [<!ENTITY % p SYSTEM "http://example.invalid/p.dtd"> %p;]>',
    '<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    '<!DOCTYPE annotation [<!ELEMENT annotation ANY><!ATTLIST annotation x CDATA "1">]>',
]
MISC = st.sampled_from(
    ["", "\n", "  \n\t", "<!-- exported by a tool -->", "<?xml-stylesheet href='a.xsl'?>", "<?p q?>"]
)


@st.composite
def mutations(draw, data: bytes) -> bytes:
    """Cut, flip, insert, delete or repeat bytes."""
    kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "repeat"]))
    n = len(data)
    at = draw(st.integers(0, max(n - 1, 0)))
    if kind == "cut":
        return data[:at]
    if kind == "flip":
        mutable = bytearray(data)
        for pos in draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=1, max_size=8)):
            if mutable:
                mutable[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(mutable)
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"<", b"&", b"]]>", b"\x00"]))
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    return data[:at] + data[at : at + 64] * draw(st.integers(2, 4)) + data[at + 64 :]


def _encode(text: str, codec: str) -> bytes:
    if codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32"):
        return text.encode(codec, errors="surrogatepass")
    return text.encode(codec, errors="xmlcharrefreplace")


@st.composite
def documents(draw, objects=None, filename=None, size=None, tidy: bool = False, junk=None) -> Doc:
    """A VOC-ish annotation, serialized in one of ENCODINGS, maybe with a DTD, maybe mutated afterwards.

    Mostly honest encodings, no DTD and no mutation, so that most documents reach the VOC reading; `tidy`
    (for datasets) always so.
    """
    hostile = not tidy and draw(st.integers(0, 3)) == 0
    roots = ["annotation"] * 12 + ["Annotation", "ANNOTATION", "annotations", "object", "svg"]
    root_tag = draw(st.sampled_from(roots if hostile else ["annotation"] * 6 + ["Annotation", "ANNOTATION"]))
    object_list = draw(objects if objects is not None else st.lists(object_nodes(), max_size=4))
    children = list(object_list)
    name_text = draw(filename if filename is not None else st.one_of(st.none(), NAME_TEXT, LEGAL_TEXT, PATHS))
    if name_text is not None:
        children.append(Node("filename", name_text))
    has_size = draw(st.integers(0, 5)) > 0
    if has_size:
        children.append(draw(size if size is not None else size_nodes()))
    children += draw(junk if junk is not None else st.lists(junk_nodes(), max_size=3))
    root = Node(root_tag, attrs=draw(ATTRS), children=draw(st.permutations(children)))
    recase(root, draw(TAG_CASES))
    body = render(root)
    if tidy:
        body = _XML_ILLEGAL.sub("", body)

    honest_ones = [e for e in ENCODINGS if e[3] is True]
    codec, declared, bom, honest = draw(st.sampled_from(ENCODINGS if hostile else honest_ones))
    decl = "" if declared is None else f'<?xml version="1.0"{f" encoding={declared!r}" if declared else ""}?>'
    doctype = draw(st.none() | st.sampled_from(DOCTYPES)) if hostile else None
    text = decl + draw(MISC) + (doctype or "") + draw(MISC) + body + draw(MISC)
    data = bom + _encode(text, codec)
    mutated = not tidy and draw(st.integers(0, 4)) == 0
    if mutated:
        data = draw(mutations(data))

    if mutated or honest is False:
        return Doc(data, "any")
    if honest == IF_UTF8 and not _is_utf8(data):
        return Doc(data, "any" if doctype else "malformed")
    if doctype:
        return Doc(data, "unsafe")
    # Legal characters only, once encoded (a code page writes the others as legal character references).
    if _XML_ILLEGAL.search(body):
        return Doc(data, "malformed" if root_tag.lower() == "annotation" else "any")
    if root_tag.lower() != "annotation":
        return Doc(data, "malformed")
    expected_name = _normalise(name_text).strip() if name_text is not None else ""
    return Doc(data, "ok", objects=len(object_list), filename=expected_name or None, has_size=has_size)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _normalise(text: str) -> str:
    """What an XML parser hands back for element text: line ends normalised to '\\n'."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_or_issue(data: bytes) -> Annotation | AnnotationError:
    """parse_annotation's contract: an Annotation of the documented shape, or an AnnotationError with a code."""
    try:
        ann = parse_annotation(data)
    except AnnotationError as exc:
        assert exc.code in XML_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message.strip()
        return exc
    assert isinstance(ann, Annotation)
    assert ann.filename is None or (isinstance(ann.filename, str) and ann.filename == ann.filename.strip())
    for value in (ann.width, ann.height):
        assert value is None or (isinstance(value, int | float) and math.isfinite(value) and value > 0)
    for obj in ann.objects:
        assert isinstance(obj, VocObject)
        assert isinstance(obj.name, str) and obj.name == obj.name.strip()
        assert isinstance(obj.difficult, bool) and isinstance(obj.truncated, bool)
        assert set(obj.bndbox) <= set(BOX_KEYS)
        for value in obj.bndbox.values():
            assert isinstance(value, str) or (isinstance(value, float) and math.isfinite(value))
    return ann


@fuzz_settings("structured_xml")
@given(documents())
def test_any_voc_like_document_parses_or_is_reported(doc):
    outcome = parse_or_issue(doc.data)
    event(f"expected {doc.expect}, got {getattr(outcome, 'code', 'a parse')}")
    if doc.expect == "ok":
        assert isinstance(outcome, Annotation), f"a well-formed VOC document was refused: {outcome}"
        assert len(outcome.objects) == doc.objects
        assert outcome.filename == doc.filename
        if doc.filename:  # a Windows or POSIX path: its last part
            assert base_name(outcome.filename) == re.split(r"[\\/]", doc.filename)[-1]
    elif doc.expect in ("unsafe", "malformed"):
        assert isinstance(outcome, AnnotationError), "a DTD or a broken document was accepted"
        assert outcome.code == f"xml_{doc.expect}"


XML_BYTES = st.one_of(
    st.binary(max_size=600),
    ANY_TEXT.map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.tuples(
        st.sampled_from([b"<annotation>", b"<?xml version='1.0'?><annotation>", b"\xef\xbb\xbf<annotation", b"<"]),
        st.binary(max_size=300),
    ).map(b"".join),
    st.text(st.sampled_from("<>/&;!?[]=\"' annotobject#x0123456789"), max_size=200).map(str.encode),
)


@fuzz_settings("raw_xml")
@given(XML_BYTES)
def test_any_bytes_parse_or_are_reported(data):
    event(f"got {getattr(parse_or_issue(data), 'code', 'a parse')}")


@pytest.mark.parametrize(
    "data",
    [
        b"<annotation>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</annotation>",  # very deep nesting
        b"<annotation>" + b"<object><name>circle</name></object>" * 20_000 + b"</annotation>",
        b'<annotation a="' + b"x" * 1_000_000 + b'"/>',
        b"<annotation>" + b"&amp;" * 100_000 + b"</annotation>",
    ],
    ids=["deep", "many-objects", "huge-attribute", "many-references"],
)
def test_oversized_documents_parse_or_are_reported(data):
    parse_or_issue(data)


# ================================================================ images


@dataclass(frozen=True)
class Base:
    """A valid image and what inspect_image must say about it."""

    data: bytes
    info: ImageInfo
    exif: bool = False  # holds an EXIF block


_BASE_SPECS = [
    ("jpeg", (64, 48), "RGB", None),
    ("jpeg", (16, 12), "L", None),
    ("jpeg", (40, 30), "RGB", 6),
    ("jpeg", (40, 30), "RGB", 9),  # an invalid orientation value reads as 1
    ("png", (64, 48), "RGB", None),
    ("png", (17, 5), "P", None),
    ("png", (8, 8), "RGBA", 3),
    ("png", (1, 1), "L", None),
    ("bmp", (64, 48), "RGB", None),
    ("bmp", (9, 7), "P", None),
    ("webp", (64, 48), "RGB", None),
    ("webp", (20, 30), "RGB", 8),
]


def _pillow(fmt: str, mode: str, **options) -> Base:
    """Variants the factory does not write: progressive and CMYK JPEG, 16-bit and 1-bit PNG, APNG, lossy and
    animated WebP."""
    image = Image.new("RGB", (30, 20), (10, 200, 30))
    image.paste((255, 0, 0), (0, 0, 7, 5))
    if options.pop("animated", False):
        options.update(save_all=True, append_images=[Image.new(image.mode, image.size, (0, 0, 255))])
    image = image.convert(mode) if mode != "I;16" else Image.new("I;16", image.size, 1000)
    buffer = io.BytesIO()
    image.save(buffer, fmt.upper(), **options)
    return Base(buffer.getvalue(), ImageInfo(fmt, 30, 20, 1))


@cache
def bases() -> tuple[Base, ...]:
    made = []
    for index, (fmt, size, mode, orientation) in enumerate(_BASE_SPECS):
        data = image_bytes(fmt, size, mode=mode, seed=index, exif_orientation=orientation)
        valid = orientation if orientation in range(1, 9) else 1
        made.append(Base(data, ImageInfo(fmt, size[0], size[1], valid), exif=orientation is not None))
    made += [
        _pillow("jpeg", "RGB", progressive=True),
        _pillow("jpeg", "CMYK"),
        _pillow("png", "I;16"),
        _pillow("png", "1"),
        _pillow("png", "RGB", animated=True),
        _pillow("bmp", "1"),
        _pillow("webp", "RGB", quality=50),
        _pillow("webp", "RGBA", animated=True, lossless=True),
    ]
    return tuple(made)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


EXIF_GARBAGE = st.one_of(
    st.binary(max_size=300).map(lambda b: b"Exif\x00\x00" + b),
    st.binary(max_size=300).map(lambda b: b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + b),  # a TIFF header, then junk
    st.binary(max_size=300).map(lambda b: b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + b),
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
        # one IFD entry: the orientation tag with any type, count and value/offset
        lambda t: b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12" + struct.pack(">HII", *t)
    ),
)


def with_exif(base: Base, blob: bytes) -> bytes | None:
    """The base image with an EXIF block holding `blob` (JPEG APP1, PNG eXIf); None for other formats."""
    if base.info.format == "jpeg" and len(blob) < 65000:
        segment = b"\xff\xe1" + struct.pack(">H", len(blob) + 2) + blob
        return base.data[:2] + segment + base.data[2:]
    if base.info.format == "png":
        at = base.data.find(b"IDAT") - 4
        payload = blob[6:] if blob.startswith(b"Exif\x00\x00") else blob  # eXIf holds the TIFF part only
        return base.data[:at] + _png_chunk(b"eXIf", payload) + base.data[at:]
    return None


def with_size(base: Base, width: int, height: int) -> bytes:
    """The base image whose header claims another size (PNG: with a valid CRC; BMP: no checksum)."""
    data = bytearray(base.data)
    if base.info.format == "png":
        data[8:33] = _png_chunk(b"IHDR", struct.pack(">II", width, height) + bytes(data[24:29]))
    elif base.info.format == "bmp":
        data[18:26] = struct.pack("<II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
    elif base.info.format == "webp" and data[12:16] == b"VP8L":
        bits = (
            (width - 1) & 0x3FFF | ((height - 1) & 0x3FFF) << 14 | (int.from_bytes(data[21:25], "little") >> 28) << 28
        )
        data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"II*\x00", b"%PDF"]


@dataclass
class FuzzImage:
    data: bytes
    # "ok": accepted as `info` (trailing bytes counted); "truncated": image_truncated; "refused": an ImageError;
    # "exif-garbage": accepted in its size, or refused for its orientation; "any": accepted or refused
    expect: str
    info: ImageInfo | None = None


# What follows a complete image in real files: zero padding, a "motion photo" (an MP4 appended to the JPEG),
# a camera's or phone's trailer, bytes that look like the start or end of another image.
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
TRAILERS = st.one_of(
    st.integers(1, 4096).map(bytes),
    st.binary(max_size=300).map(lambda body: MP4_HEAD + b"\x00\x00\x01\x00moov" + body),
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"\xff\xd9", b"\xff\xd8\xff\xe1\x00\x10Exif", b"SEFHSEFT\x00\x00", b"\x89PNG\r\n\x1a\n", b"IEND"]),
)


@st.composite
def images(draw) -> FuzzImage:
    base = draw(st.sampled_from(bases()))
    data, n = base.data, len(base.data)
    kind = draw(
        st.sampled_from(
            ["valid", "cut", "flip", "overwrite", "magic", "exif", "size", "append", "trailing", "random", "magic+"]
        )
    )
    if kind == "valid":
        return FuzzImage(data, "ok", base.info)
    if kind == "cut":  # once the magic bytes are there (12), a file cut short says so
        at = draw(st.integers(0, n - 1))
        return FuzzImage(data[:at], "truncated" if at >= 12 else "refused")
    if kind == "trailing":  # a complete image and more: accepted, the extra bytes counted
        tail = draw(TRAILERS)
        return FuzzImage(data + tail, "ok", replace(base.info, trailing_bytes=len(tail)))
    if kind == "flip":
        mutable = bytearray(data)
        for pos in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            mutable[pos] ^= 1 << draw(st.integers(0, 7))
        return FuzzImage(bytes(mutable), "any")
    if kind == "overwrite":
        at = draw(st.integers(0, n - 1))
        junk = draw(st.binary(min_size=1, max_size=32))
        return FuzzImage(data[:at] + junk + data[at + len(junk) :], "any")
    if kind == "magic":  # another format's magic on this body, or this magic damaged
        magic = draw(st.sampled_from(MAGICS) | st.binary(min_size=1, max_size=4))
        return FuzzImage(magic + data[len(magic) :], "any")
    if kind == "exif":
        blob = draw(EXIF_GARBAGE)
        made = with_exif(base, blob)
        if made is None:
            return FuzzImage(data, "ok", base.info)
        # Garbage EXIF on valid pixels is valid input (docs/architecture.md), unless Pillow and OpenCV read
        # different orientations from it (OpenCV applies some broken entries; a second block): refused, saying so.
        return FuzzImage(made, "exif-garbage", base.info)
    if kind == "size":
        dims = st.integers(0, 4096) | st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**32 - 1, 100_000])
        return FuzzImage(with_size(base, draw(dims), draw(dims)), "any")
    if kind == "append":
        return FuzzImage(data + draw(st.binary(min_size=1, max_size=64)), "any")
    if kind == "random":
        return FuzzImage(draw(st.binary(max_size=512)), "any")
    return FuzzImage(draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=512)), "any")


def inspect_or_issue(data: bytes) -> ImageInfo | ImageError:
    """inspect_image's contract: an ImageInfo of the documented shape, or an ImageError with a code."""
    try:
        info = inspect_image(data, MAX_PIXELS)
    except ImageError as exc:
        assert exc.code in IMAGE_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message.strip()
        assert not re.search(r" at 0x[0-9a-f]+", exc.message), "messages are stable: no memory addresses"
        return exc
    assert info.format in FORMATS and info.format == sniff_format(data[:12])
    assert isinstance(info.width, int) and isinstance(info.height, int) and info.width > 0 and info.height > 0
    assert isinstance(info.orientation, int) and 1 <= info.orientation <= 8
    # What validation accepts, training can read (Ultralytics reads with OpenCV), in the frame validation says.
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown is not None, "accepted, but OpenCV cannot decode it: training would stop on it"
    assert (shown.shape[1], shown.shape[0]) == displayed_size(info.width, info.height, info.orientation), (
        "OpenCV shows the image in another frame than validation says"
    )
    return info


@fuzz_settings("images")
@given(images())
def test_any_image_bytes_decode_or_are_reported(image):
    outcome = inspect_or_issue(image.data)
    event(f"expected {image.expect}, got {getattr(outcome, 'code', 'an image')}")
    if image.expect == "ok":
        assert outcome == image.info
    elif image.expect in ("truncated", "refused"):
        assert isinstance(outcome, ImageError), "an image cut short was accepted"
        assert image.expect == "refused" or outcome.code == "image_truncated", outcome
    elif image.expect == "exif-garbage" and isinstance(outcome, ImageError):
        assert "orientation" in outcome.message, f"garbage EXIF rejected a valid image: {outcome}"
    elif image.expect == "exif-garbage":
        assert (outcome.format, outcome.width, outcome.height) == (
            image.info.format,
            image.info.width,
            image.info.height,
        )


# ================================================================ whole datasets -> validate -> convert

# Sample names. Each has its own look-alike key (see look_alike_key), so that two samples never look alike by
# accident, and they hold what Linux allows and real exports have: spaces, '#' (a leading one starts a comment
# in an ImageSets list), a leading '-', a trailing space, dots, brackets and quotes, emoji, CJK, Hangul (which
# NFD decomposes), Cyrillic, accents, names of 200+ bytes (at most 255 with a copy mark and the extension).
STEMS = [
    "000001", "IMG_0001", "a b", "x.y", "Zz", "dog#1", "#hash", "-dash", "000002 ", "Se\u00f1al", "caf\u00e9",
    "\u00dcn\u00efcode", "\u6570\u636e\u96c6", "\u5199\u771f_01", "\uc0ac\uc9c4", "\u0451\u043b\u043a\u0430",
    "\U0001f436 dog", "\U0001f642", "photo \U0001f600 2", "[1] {x}; y,z 'q'", "L" + "o" * 200 + "ng",
    "\u9577\u3044\u540d\u524d" * 18,
]  # fmt: skip
RARE_STEMS = ["line\nbreak", "p\u2028q"]  # a path with a line break cannot be listed: image_unreadable
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where str.splitlines breaks

# Code pages a Windows archive's names come in: unzip leaves their bytes, which Python holds as surrogates.
CODE_PAGES = ("cp1252", "cp437", "cp1251", "gbk", "shift_jis", "euc-kr")
COPY_MARKS = [" (1)", " (2)", " - Copy", "_copy", " copy 2", "-Copy"]
_COPY_MARK = re.compile(r"(?:\s*\(\d+\)|[\s_-]*(?:-\s*)?copy(?:\s*\d+)?)$", re.IGNORECASE)


def fold(name: str) -> str:
    """The spelling two names that pair share: Unicode NFC (macOS writes NFD), case folded."""
    return unicodedata.normalize("NFC", name).casefold()


def look_alike_key(stem: str) -> str:
    """What a person calls "the same name": letters and digits only, case folded, without a copy mark."""
    bare = unicodedata.normalize("NFKC", _COPY_MARK.sub("", stem)).casefold()
    return "".join(ch for ch in bare if ch.isalnum())


def not_utf8(name: str | None) -> bool:
    """Whether a name as the OS gave it holds bytes that are not UTF-8 (os.fsdecode's surrogates)."""
    return name is not None and any("\udc80" <= ch <= "\udcff" for ch in name)


def windows_names(stem: str) -> list[str]:
    """`stem` as unzip leaves a Windows archive's name: in each code page that can write it and is not UTF-8."""
    names = []
    for codec in CODE_PAGES:
        try:
            name = os.fsdecode(stem.encode(codec))
        except UnicodeEncodeError:
            continue
        if not_utf8(name) and name not in names:
            names.append(name)
    return names


def spellings(stem: str) -> list[str]:
    """Spellings of a name that pair with it: itself, NFD (macOS), another letter case."""
    forms = [stem, unicodedata.normalize("NFD", stem), stem.swapcase(), stem.upper(), stem.lower()]
    return [form for form in dict.fromkeys(forms) if fold(form) == fold(stem)]


def look_alikes(stem: str) -> list[str]:
    """Names that look like `stem` to a person but do not pair: a copy mark, other separators."""
    forms = [stem + mark for mark in COPY_MARKS]
    forms += [stem.replace("_", "-"), stem.replace(" ", "_"), stem.replace(" ", ""), stem.upper().replace("_", "")]
    key = look_alike_key(stem)
    return [f for f in dict.fromkeys(forms) if fold(f) != fold(stem) and look_alike_key(f) == key]


def filename_texts(name: str) -> st.SearchStrategy[str]:
    """A <filename> that names the image `name`: as it is, in a Windows or POSIX path, another case, NFD."""
    return st.sampled_from(
        [
            name,
            f"C:\\Users\\me\\Pictures\\{name}",
            f"D:/export/2021/{name}",
            f"..\\{name}",
            f"  {name}\n",
            name.upper(),
            unicodedata.normalize("NFD", name),
        ]
    )


def test_the_sample_names_never_look_alike_by_accident():
    names = STEMS + RARE_STEMS
    assert len({look_alike_key(stem) for stem in names}) == len(names)
    for stem in names:
        assert all(look_alike_key(s) == look_alike_key(stem) for s in spellings(stem) + look_alikes(stem))
        assert all(len(os.fsencode(f"{s} - Copy.jpeg")) <= 255 for s in [stem, *windows_names(stem)])
    assert windows_names("Se\u00f1al") == [os.fsdecode(b"Se\xf1al"), os.fsdecode(b"Se\xa4al")]


@dataclass(frozen=True)
class Layout:
    """Where a dataset's files go: an annotation folder beside an image folder, or (flat) each XML beside its
    image, in one or more folders."""

    annotations: str | None  # None: flat
    images: str = ""
    folders: tuple[str, ...] = ("",)  # flat: the folders samples go in

    def image_path(self, name: str, folder: str) -> str:
        return f"{self.images}/{name}" if self.annotations else "/".join(filter(None, (folder, name)))

    def xml_path(self, name: str, folder: str) -> str:
        return f"{self.annotations}/{name}" if self.annotations else "/".join(filter(None, (folder, name)))


ANNOTATION_FOLDERS = ["Annotations"] * 4 + ["Annotation", "annotations", "ANNOTATIONS", "labels", "xml"]
IMAGE_FOLDERS = ["JPEGImages"] * 4 + ["images", "Images", "jpegimages"]
FLAT_FOLDERS = ["", "set1", "images", "Fotos 2021"]


@st.composite
def layouts(draw) -> Layout:
    if draw(st.integers(0, 2)):
        return Layout(draw(st.sampled_from(ANNOTATION_FOLDERS)), draw(st.sampled_from(IMAGE_FOLDERS)))
    folders = draw(st.lists(st.sampled_from(FLAT_FOLDERS), min_size=1, max_size=2, unique=True))
    return Layout(None, folders=tuple(folders))


@dataclass
class FuzzSample:
    """One sample's files (paths relative to the dataset folder, maybe not UTF-8) and what validation must make
    of them."""

    index: int
    pairing: str  # "name", "filename" (a renamed XML), "look-alike", "image only", "xml only"
    how: str = ""  # look-alike: "mark" (a copy mark, other separators), "folder" (flat), "bytes" (not UTF-8)
    image_path: str | None = None
    image: bytes | None = None
    trailing: int | None = None  # a valid image: the bytes appended to it (None: not a valid image)
    xml_path: str | None = None
    xml: bytes | None = None
    xml_clean: bool = False  # parses; <size> right or absent; every object a known class inside the frame
    objects: int = 0
    look_alikes: dict[str, bytes] = field(default_factory=dict)  # more lone images that look like its lone XML

    @property
    def images(self) -> list[str]:
        return [path for path in (self.image_path, *self.look_alikes) if path]


@dataclass
class BoxNode(Node):
    """An <object> from plausible_objects, and the box its text holds."""

    box: tuple[float, ...] = ()

    def inside(self, width: int, height: int) -> bool:
        xmin, ymin, xmax, ymax = self.box
        return 0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height


def valid_images() -> st.SearchStrategy[FuzzImage]:
    return st.sampled_from(bases()).map(lambda base: FuzzImage(base.data, "ok", base.info))


def trailing_images() -> st.SearchStrategy[FuzzImage]:
    """A valid image followed by more bytes: accepted, with image_trailing_data."""
    return st.tuples(st.sampled_from(bases()), TRAILERS).map(
        lambda pair: FuzzImage(pair[0].data + pair[1], "ok", replace(pair[0].info, trailing_bytes=len(pair[1])))
    )


@st.composite
def plausible_objects(draw, width: int, height: int) -> BoxNode:
    """An object that often passes every check: a known class, a box mostly inside the image, in any tag case."""
    values = {}
    for low, high, extent in (("xmin", "xmax", width), ("ymin", "ymax", height)):
        start = draw(st.integers(-1, extent - 1))
        pair = [start + draw(st.sampled_from([0, 0.5, 0.25])), draw(st.integers(start + 1, extent + 1))]
        if draw(st.integers(0, 19)) == 0:
            pair.reverse()
        as_text = draw(st.sampled_from([lambda v: f"{v:.1f}", lambda v: f"{v:g}", repr]))
        values[low], values[high] = as_text(pair[0]), as_text(pair[1])
    box = Node("bndbox", children=[Node(key, values[key]) for key in draw(st.permutations(BOX_KEYS))])
    children = [Node("name", draw(st.sampled_from(CLASSES))), box]
    if draw(st.booleans()):
        children.append(Node("difficult", draw(FLAG_TEXT)))
    tag = draw(st.sampled_from(["object"] * 4 + ["Object", "OBJECT"]))
    return BoxNode(tag, children=children, box=tuple(float(values[key]) for key in BOX_KEYS))


# Elements a reader ignores, cheaper than junk_nodes (whose deep trees the document tests cover).
LIGHT_JUNK = st.lists(
    st.sampled_from(JUNK_TAGS).map(Node) | st.builds(lambda: Node("part", children=[Node("name", "hand")])), max_size=2
)


@st.composite
def annotation_files(draw, width: int, height: int, orientation: int, filename: str, tidy: bool | None = None):
    """(XML bytes, clean, objects) for an image of that stored size and EXIF orientation; clean: nothing in it
    can reject its sample (tidy, <size> right or absent, objects of known classes inside the frame)."""
    shown = displayed_size(width, height, orientation)
    size_kind = draw(st.sampled_from(["stored", "stored", "shown", "zero", "garbage"]))
    if size_kind == "garbage":  # values and elements dropped or replaced
        size = draw(size_nodes(str(width), str(height), keep=True))
    else:
        size_w, size_h = {"stored": (width, height), "shown": shown, "zero": ("0", "0")}[size_kind]
        size = Node("size", children=[Node("width", str(size_w)), Node("height", str(size_h)), Node("depth", "3")])
    objects = draw(st.lists(weighted((plausible_objects(width, height), 15), (object_nodes(), 1)), max_size=4))
    tidy = draw(st.integers(0, 4)) > 0 if tidy is None else tidy
    doc = draw(
        documents(objects=st.just(objects), filename=st.just(filename), size=st.just(size), tidy=tidy, junk=LIGHT_JUNK)
    )
    frame = shown if doc.has_size and size_kind == "shown" else (width, height)  # "zero": the decoded size
    clean = doc.expect == "ok" and size_kind != "garbage"
    clean = clean and all(isinstance(obj, BoxNode) and obj.inside(*frame) for obj in objects)
    return doc.data, clean, len(objects)


@st.composite
def samples(draw, index: int, stem: str, layout: Layout) -> FuzzSample:
    image = draw(weighted((valid_images(), 12), (trailing_images(), 4), (images(), 3), (st.none(), 1)))
    info = image.info if image is not None and image.expect == "ok" else None
    pairings = [("name", 10), ("filename", 2), ("look-alike", 4), ("image only", 2)]
    pairing = draw(weighted(*((st.just(p), w) for p, w in pairings))) if image else "xml only"
    sample = FuzzSample(index, pairing, trailing=info.trailing_bytes if info else None)
    folder = xml_folder = draw(st.sampled_from(layout.folders))
    fmt = sniff_format(image.data[:12]) if image is not None else None
    suffix = draw(st.sampled_from([SUFFIX.get(fmt or "", ".jpg"), ".jpg", ".PNG", ".jpeg", ".webp"]))
    image_stem = stem
    if windows_names(stem) and draw(st.integers(0, 5)) == 0:  # unzip kept a Windows archive's bytes
        image_stem = draw(st.sampled_from(windows_names(stem)))
    image_name = image_stem + suffix
    xml_stem = image_stem
    filename = st.sampled_from([f"{stem}{suffix}", "other.jpg", ""])  # irrelevant for pairing by name
    tidy = None
    extra = extra_image = None
    if pairing == "name":
        xml_stem = draw(st.sampled_from(spellings(image_stem)))
    elif pairing == "filename" and not_utf8(image_stem):
        sample.pairing = "name"
    elif pairing == "filename":  # a renamed annotation whose <filename> names the image
        xml_stem, filename, tidy = f"label_{index}", filename_texts(image_name), True
    elif pairing == "look-alike":
        ways = ["mark"] * 3 + ["folder"] * (len(layout.folders) > 1) + ["bytes"] * bool(windows_names(image_stem))
        sample.how = draw(st.sampled_from(ways))
        if sample.how == "mark":  # `IMG_0001 (1).jpg` beside `IMG_0001.xml`, or the other way round
            variants = look_alikes(image_stem)
            variant = draw(st.sampled_from(variants))
            if draw(st.booleans()):
                image_name = variant + suffix
            else:
                xml_stem = variant
            filename = st.sampled_from([f"{xml_stem}{suffix}", "", "other.jpg"])  # never the image's name
            others = [v for v in variants if fold(v) not in (fold(variant), fold(image_stem))]
            if others and draw(st.integers(0, 3)) == 0:  # a second look-alike image (bytes of its own)
                extra = draw(st.sampled_from(others)) + draw(st.sampled_from([".jpg", ".png"]))
                extra_image = draw(valid_images()).data + b"look-alike %d" % index
        elif sample.how == "folder":  # flat: beside another image folder's files, named by <filename>
            xml_folder = draw(st.sampled_from([f for f in layout.folders if f != folder]))
            filename, tidy = filename_texts(image_name), True
        else:  # the annotation's name kept a Windows archive's bytes, the image's did not
            xml_stem = draw(st.sampled_from(windows_names(image_stem)))
            named = draw(st.sampled_from([image_name, "", "other.jpg"]))
            filename, tidy = st.just(named), True
            if named == image_name:  # then <filename> pairs them (the annotation's name rejects the sample)
                sample.pairing = "filename"

    if image is not None:
        sample.image_path, sample.image = layout.image_path(image_name, folder), image.data
    if extra is not None:
        sample.look_alikes[layout.image_path(extra, folder)] = extra_image
    if pairing != "image only":
        width, height, orientation = (info.width, info.height, info.orientation) if info else (64, 48, 1)
        xml_name = xml_stem + draw(st.sampled_from([".xml"] * 5 + [".XML"]))
        sample.xml_path = layout.xml_path(xml_name, xml_folder)
        sample.xml, sample.xml_clean, sample.objects = draw(
            annotation_files(width, height, orientation, draw(filename), tidy)
        )
    return sample


@dataclass
class Rival:
    """A second annotation for a sample's image: another spelling of its name, or a <filename> naming it."""

    path: str
    xml: bytes
    target: int  # the sample's index
    by: str  # "name" or "filename"


@st.composite
def rivals(draw, sample: FuzzSample, layout: Layout) -> Rival:
    name = sample.image_path.rsplit("/", 1)[-1]
    stem = name[: name.rfind(".")]
    folder = sample.image_path.rsplit("/", 1)[0] if "/" in sample.image_path and not layout.annotations else ""
    xml_name = sample.xml_path.rsplit("/", 1)[-1]
    names = [s + ext for s in spellings(stem) for ext in (".xml", ".XML") if s + ext != xml_name]
    if not_utf8(name) or draw(st.booleans()):
        by, path, filename = "name", layout.xml_path(draw(st.sampled_from(names)), folder), "other.jpg"
    else:  # a leftover (an older export, a renamed copy), in any folder
        by, filename = "filename", draw(filename_texts(name))
        path = layout.xml_path(f"old_{sample.index}.xml", draw(st.sampled_from(layout.folders)))
    xml = draw(annotation_files(64, 48, 1, filename, tidy=True))[0]
    return Rival(path, xml, sample.index, by)


# ImageSets lists as real exports write them: a BOM, CRLF, comments (only a line *starting* with '#'), blank
# lines, ids with an image extension, an image folder or './' in front, NFD, padding, VOC's class-list form
# (`000005  1`), and ids of no sample (imageset_unknown).
IMAGE_SET_DIRS = [("ImageSets", "Main")] * 3 + [("imagesets", "main"), ("ImageSets", "MAIN")]
GHOSTS = ["ghost", "phantom 2", "gone#1", "JPEGImages/ghost.jpg"]
COMMENTS = ["# fuzz", "  # exported by a tool", "#", "", "   "]


def listed_forms(ident: str) -> list[str]:
    return [
        ident, ident, f"{ident}.jpg", f"{ident}.PNG", f"JPEGImages/{ident}", f"./{ident}", f"images/{ident}.jpeg",
        f"  {ident}\t", unicodedata.normalize("NFD", ident), f"{ident}  1", f"{ident} -1", f"# {ident}",
    ]  # fmt: skip


@st.composite
def image_set_files(draw, ids: list[str]) -> dict[str, tuple[str, list[str], bytes]]:
    """split -> (the list's path, its lines, its bytes)."""
    sets_dir, main_dir = draw(st.sampled_from(IMAGE_SET_DIRS))
    lists = {}
    for split in draw(st.lists(st.sampled_from(SPLITS), unique=True, max_size=3)):
        forms = st.sampled_from([*ids, *GHOSTS]).flatmap(lambda ident: st.sampled_from(listed_forms(ident)))
        entries = draw(st.lists(forms, max_size=4))
        lines = draw(st.permutations(entries + draw(st.lists(st.sampled_from(COMMENTS), max_size=2))))
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        text = newline.join(lines) + (newline if lines and draw(st.booleans()) else "")
        data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode("utf-8")
        name = draw(st.sampled_from([f"{split}.txt", f"{split}.txt", f"{split.capitalize()}.txt"]))
        lists[split] = (f"{sets_dir}/{main_dir}/{name}", lines, data)
    return lists


def named_id(word: str) -> str:
    """An id as a list and a sample compare: NFC, without './', a leading image folder or an image extension."""
    ident = unicodedata.normalize("NFC", word.strip().removeprefix("./"))
    head, _, rest = ident.partition("/")
    if rest and head.lower() in ("jpegimages", "images"):
        ident = rest
    return ident[: ident.rfind(".")] if has_image_suffix(ident) else ident


def line_id(line: str) -> str | None:
    """The id a list's line names; None for a blank line or a comment (a line starting with '#')."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    words = line.split()
    return named_id(words[0] if len(words) == 2 and words[1] in ("-1", "0", "1") else line)


def path_id(path: str, tops: tuple[str, ...] = ("jpegimages", "images")) -> str:
    """A file's sample id: its path without a leading image (or annotation) folder and its extension."""
    head, _, rest = path.partition("/")
    if rest and head.lower() in tops:
        return path_id(rest)
    return str(PurePosixPath(path).with_suffix("")) if PurePosixPath(path).suffix else path


@dataclass
class FuzzDataset:
    layout: Layout
    samples: list[FuzzSample]
    rivals: list[Rival]
    image_sets: dict[str, tuple[str, list[str], bytes]]
    data: DataConfig
    seed: int

    def files(self) -> dict[str, bytes]:
        """Every file: path relative to the dataset folder -> its bytes."""
        files = {}
        for sample in self.samples:
            if sample.image_path:
                files[sample.image_path] = sample.image
            files.update(sample.look_alikes)
            if sample.xml_path:
                files[sample.xml_path] = sample.xml
        files.update({rival.path: rival.xml for rival in self.rivals})
        files.update({path: data for path, _lines, data in self.image_sets.values()})
        return files

    def splits(self, image: str) -> list[str]:
        """The lists that name an image's id."""
        ident = named_id(path_id(image))
        return [split for split, (_, lines, _) in self.image_sets.items() if ident in map(line_id, lines)]

    def unknown(self) -> set[tuple[str, str]]:
        """(list, id) of every id a list names that no image or annotation has."""
        known = {named_id(path_id(path)) for sample in self.samples for path in sample.images}
        xmls = [sample.xml_path for sample in self.samples if sample.xml_path] + [r.path for r in self.rivals]
        known |= {named_id(path_id(path, ("annotations", "annotation", "labels", "xml", "xmls"))) for path in xmls}
        listed = {(path, line_id(line)) for path, lines, _ in self.image_sets.values() for line in lines}
        return {(path, ident) for path, ident in listed if ident is not None and ident not in known}

    def twins(self, sample: FuzzSample) -> bool:
        return any(other.image == sample.image for other in self.samples if other is not sample and other.image)

    def clean(self, sample: FuzzSample) -> bool:
        """Nothing can reject it: it must be accepted, with its objects."""
        return (
            sample.pairing in ("name", "filename")
            and sample.trailing is not None
            and sample.xml_clean
            and not (not_utf8(sample.image_path) or not_utf8(sample.xml_path))
            and not _LINE_BREAK.search(sample.image_path)
            and all(rival.target != sample.index for rival in self.rivals)
            and len(self.splits(sample.image_path)) <= 1
            and not (self.image_sets and self.twins(sample))
        )


@cache
def base_data_config() -> DataConfig:
    """conf/'s data section with the fuzz classes (composed once: composing takes tens of milliseconds)."""
    return data_config(classes=list(CLASSES), on_error="skip")


SAMPLES = {"min_size": 1, "max_size": 4, "unique_by": look_alike_key}  # 1 to 4 samples that never look alike


@st.composite
def datasets(draw) -> FuzzDataset:
    layout = draw(layouts())
    stems = draw(st.lists(weighted((st.sampled_from(STEMS), 19), (st.sampled_from(RARE_STEMS), 1)), **SAMPLES))
    made = [draw(samples(index, stem, layout)) for index, stem in enumerate(stems)]
    imaged = [sample for sample in made if sample.image]
    if len(imaged) > 1 and draw(st.integers(0, 5)) == 0:  # a byte-identical copy (its <size> may not fit)
        imaged[-1].image, imaged[-1].trailing, imaged[-1].xml_clean = imaged[0].image, imaged[0].trailing, False
    claimed = [s for s in made if s.pairing in ("name", "filename") and s.image and s.xml]
    made_rivals = [draw(rivals(s, layout)) for s in claimed if draw(st.integers(0, 7)) == 0]
    image_sets = {}
    if draw(st.integers(0, 2)) == 0:
        ids = [path_id(p) for s in made for p in s.images if not (not_utf8(p) or _LINE_BREAK.search(p))]
        image_sets = draw(image_set_files(ids))
    data = replace(
        base_data_config(),
        allow_background=draw(st.integers(0, 3)) > 0,
        bbox_tolerance_px=draw(st.sampled_from([0.0, 2.0, 5.5])),
        one_based_coords=draw(st.booleans()),
        include_difficult=draw(st.booleans()),
    )
    return FuzzDataset(layout, made, made_rivals, image_sets, data, draw(st.integers(0, 3)))


def write_dataset(raw: Path, dataset: FuzzDataset) -> None:
    for rel, data in dataset.files().items():
        path = raw / rel  # a name that is not UTF-8 goes back to its bytes (os.fsencode)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def disk_paths(raw: Path) -> set[str]:
    """Every file and folder under raw, as an issue names it (bytes that are not UTF-8 escaped)."""
    found = {"."}
    for folder, dirs, files in os.walk(raw):
        rel = Path(folder).relative_to(raw).as_posix()
        found |= {printable(name if rel == "." else f"{rel}/{name}") for name in dirs + files}
    return found


def check_report(report: dict, rows: list[dict], raw: Path, data: DataConfig) -> None:
    """report.json as documented: counts that add up, known codes with their severities, sorted issues, every
    path a file or folder that is there, UTF-8 JSON whatever the file names."""
    assert set(report) == {"samples", "accepted", "rejected", "warnings", "by_code", "issues"}
    assert report["accepted"] + report["rejected"] == report["samples"]
    assert report["accepted"] == len(rows)
    issues = report["issues"]
    assert [(i["path"], i["code"]) for i in issues] == sorted((i["path"], i["code"]) for i in issues)
    there = disk_paths(raw)
    for issue in issues:
        assert set(issue) == {"path", "code", "severity", "message"}
        assert issue["code"] in REPORT_SEVERITY, issue
        expected = REPORT_SEVERITY[issue["code"]]
        if issue["code"] == "annotation_missing" and "kept as a background" not in issue["message"]:
            expected = "error"  # without data.allow_background, or with a partner that may be there
        if issue["code"] == "annotation_missing" and expected == "warning":
            assert data.allow_background, issue
        assert issue["severity"] == expected, issue
        assert issue["message"].strip()
        assert issue["path"] in there, f"an issue names a path that is not there: {issue}"
    assert report["by_code"] == dict(sorted(Counter(i["code"] for i in issues).items()))
    assert report["warnings"] == sum(i["severity"] == "warning" for i in issues)
    assert ("dataset_empty" in report["by_code"]) == (report["accepted"] == 0)
    assert all(i["path"] == "." for i in issues if i["code"] == "dataset_empty")
    json.dumps(report, allow_nan=False, ensure_ascii=False).encode("utf-8")  # no lone surrogate anywhere


def check_rows(rows: list[dict], raw: Path, data: DataConfig) -> None:
    """Manifest rows: sorted, unique ids, UTF-8 names, finite boxes inside the frame they refer to, known classes."""
    assert [row["image"] for row in rows] == sorted(row["image"] for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        json.dumps(row, allow_nan=False, ensure_ascii=False).encode("utf-8")
        assert not any(map(not_utf8, (row["id"], row["image"], row["annotation"]))), row
        assert (raw / row["image"]).is_file()
        assert row["boxes_frame"] in ("stored", "rotated") and 1 <= row["orientation"] <= 8
        frame_w, frame_h = (row["width"], row["height"])
        if row["boxes_frame"] == "rotated":
            frame_w, frame_h = displayed_size(row["width"], row["height"], row["orientation"])
        for obj in row["objects"]:
            assert obj["class_id"] == data.classes.index(obj["name"])
            assert 0 <= obj["xmin"] < obj["xmax"] <= frame_w and 0 <= obj["ymin"] < obj["ymax"] <= frame_h, obj


class Verdicts:
    """A report's issues by path (as the report writes it: bytes that are not UTF-8 escaped)."""

    def __init__(self, report: dict) -> None:
        self.issues = report["issues"]
        self.at: dict[str, list[dict]] = {}
        for issue in self.issues:
            self.at.setdefault(issue["path"], []).append(issue)

    def codes(self, path: str, severity: str | None = None) -> set[str]:
        return {i["code"] for i in self.at.get(printable(path), []) if severity in (None, i["severity"])}

    def message(self, path: str, code: str) -> str:
        return " ".join(i["message"] for i in self.at.get(printable(path), []) if i["code"] == code)

    def told_about(self, xml: str) -> list[str]:
        """The images told that `xml` looks like their annotation."""
        said = f"{printable(xml)} looks like its annotation"
        return [i["path"] for i in self.issues if i["code"] == "annotation_missing" and said in i["message"]]


def check_samples(dataset: FuzzDataset, report: dict, rows: list[dict]) -> None:
    """What validation must make of the generated samples: clean ones accepted with every object (in any tag
    case) and their split; names that are not UTF-8 rejected; ImageSets ids of no sample warned about; two
    annotations for an image a conflict; an image with an annotation on disk never a background."""
    verdicts = Verdicts(report)
    codes = verdicts.codes
    row_of = {row["image"]: row for row in rows}
    odd = {printable(path) for path in dataset.files() if not_utf8(path)}
    assert {i["path"] for i in report["issues"] if i["code"] == "name_not_utf8"} == odd
    unknown = sorted((i["path"], i["message"]) for i in report["issues"] if i["code"] == "imageset_unknown")
    expected = sorted((path, f"lists {ident!r}, ") for path, ident in dataset.unknown())
    assert len(unknown) == len(expected), (unknown, expected)
    for (path, text), (want, prefix) in zip(unknown, expected, strict=True):
        assert path == want and text.startswith(prefix), (unknown, expected)
    rival_of = {rival.target: rival for rival in dataset.rivals}

    for sample in dataset.samples:
        if sample.trailing:  # a complete image and more: never refused for it, always said
            assert "image_trailing_data" in codes(sample.image_path)
        elif sample.trailing == 0:
            assert "image_trailing_data" not in codes(sample.image_path)
        if sample.image_path and len(dataset.splits(sample.image_path)) > 1:
            assert "split_leak" in codes(sample.image_path)
        if dataset.clean(sample):
            row = row_of.get(sample.image_path)
            assert row is not None, f"a clean sample was rejected: {verdicts.at.get(printable(sample.image_path))}"
            assert row["annotation"] == sample.xml_path and len(row["objects"]) == sample.objects
            assert not codes(sample.xml_path, "error")
            if not dataset.twins(sample):
                assert row["split"] == next(iter(dataset.splits(sample.image_path)), None)
        if sample.index in rival_of:
            check_rival(sample, rival_of[sample.index], row_of, verdicts)
        if sample.pairing == "look-alike":
            check_look_alike(sample, row_of, verdicts)
        for path in sample.images:
            row = row_of.get(path)
            if row is not None and row["annotation"] is None:  # a background: only when nothing claims it
                assert sample.pairing == "image only", (
                    f"{path} has an annotation on disk ({sample.pairing}, {sample.how}), but was kept as a background"
                )
            elif row is not None and sample.pairing in ("name", "filename"):
                assert row["annotation"] == sample.xml_path or sample.index in rival_of


def check_rival(sample: FuzzSample, rival: Rival, row_of: dict, verdicts: Verdicts) -> None:
    """Two annotations claim one image: annotation_conflict on it, naming both; which one is right is unknown."""
    assert "annotation_conflict" in verdicts.codes(sample.image_path, "error"), (sample, rival)
    assert sample.image_path not in row_of
    claims = verdicts.message(sample.image_path, "annotation_conflict")
    assert printable(rival.path) in claims and printable(sample.xml_path) in claims, claims
    assert "annotation_conflict" in verdicts.codes(rival.path) | verdicts.codes(sample.xml_path)


def check_look_alike(sample: FuzzSample, row_of: dict, verdicts: Verdicts) -> None:
    """A lone annotation and a lone image that look alike: errors on both that name the other, never a
    background."""
    assert "image_missing" in verdicts.codes(sample.xml_path, "error")
    for path in sample.images:
        assert "annotation_missing" in verdicts.codes(path, "error"), f"{path} looks like {sample.xml_path}, untold"
        assert path not in row_of
        assert printable(sample.xml_path) in verdicts.message(path, "annotation_missing")
        assert printable(path) in verdicts.message(sample.xml_path, "image_missing")


def check_yolo(yolo: Path, rows: list[dict], data: DataConfig) -> None:
    """One label file per accepted sample; every line `class_id cx cy w h`, an int id and 4 floats in [0, 1]."""
    labels = sorted(yolo.glob("labels/*/**/*.txt"))
    assert len(labels) == len(rows)
    for label in labels:
        for line in label.read_text(encoding="utf-8").splitlines():
            fields = line.split(" ")
            assert len(fields) == 5, line
            assert re.fullmatch(r"\d+", fields[0]) and int(fields[0]) < len(data.classes), line
            for value in fields[1:]:
                assert re.fullmatch(r"\d\.\d{6}", value) and 0.0 <= float(value) <= 1.0, line
    listed = [
        line for split in ("train", "val", "test") if (yolo / f"{split}.txt").exists()
        for line in (yolo / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    ]  # fmt: skip
    assert len(listed) == len(rows)
    for line in listed:
        assert (yolo / line).is_file(), f"the split list names a missing image: {line!r}"


# Scratch folders in memory where there is such a file system: report.json and the manifest are written with
# fsync (atomic writes), which costs milliseconds a file on a disk and nothing on tmpfs.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@fuzz_settings("datasets")
@given(datasets())
def test_any_dataset_validates_to_reported_issues_and_converts_to_valid_yolo(dataset):
    with tempfile.TemporaryDirectory(prefix="vis-fuzz-", dir=SCRATCH) as scratch:
        raw, out = Path(scratch) / "raw", Path(scratch) / "out"
        raw.mkdir()
        write_dataset(raw, dataset)
        with pytest.MonkeyPatch.context() as patch:
            # Every file counts as settled, so that the reuse store keeps each one's digest under its name (any
            # bytes, UTF-8 or not), and the second run finds every outcome by the files' stat, through the store.
            patch.setattr(reuse_store, "_SETTLED_NS", 0)
            result = validate_dataset(raw, dataset.data, reuse_dir=Path(scratch) / "reuse")
            again = validate_dataset(raw, dataset.data, reuse_dir=Path(scratch) / "reuse")
        assert (again.report, again.rows) == (result.report, result.rows)
        rows = [asdict(row) for row in result.rows]
        event(f"{len(rows)} of {result.report['samples']} samples accepted")
        for code in result.report["by_code"]:
            event(code)
        check_report(result.report, rows, raw, dataset.data)
        check_rows(rows, raw, dataset.data)
        check_samples(dataset, result.report, rows)
        write_validation(result, out / "validated", on_error="skip")
        assert json.loads((out / "validated" / "report.json").read_text(encoding="utf-8")) == result.report
        # Everything validation accepted must convert: a VisError here would be a validator bug.
        convert(out / "validated" / "manifest.jsonl", raw, out / "yolo", dataset.data, dataset.seed)
        check_yolo(out / "yolo", rows, dataset.data)


def test_an_image_path_with_a_line_break_is_rejected_not_listed(tmp_path):
    """Found by the fuzz test: `a\\nb.jpg` was accepted and broke the split lists that metadata then read."""
    raw = tmp_path / "raw"
    for stem in ("line\nbreak", "ok"):
        (raw / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (raw / "JPEGImages" / f"{stem}.jpg").write_bytes(image_bytes("jpeg", seed=len(stem)))
    result = validate_dataset(raw, data_config(classes=list(CLASSES)))
    assert [row.image for row in result.rows] == ["JPEGImages/ok.jpg"]
    assert [(i["path"], i["code"]) for i in result.report["issues"] if i["severity"] == "error"] == [
        ("JPEGImages/line\nbreak.jpg", "image_unreadable")
    ]


def test_a_png_with_rows_missing_is_refused_although_pillow_decodes_it():
    """Found by the fuzz test: Pillow leaves missing rows blank, libpng (OpenCV, so Ultralytics) fails."""
    base = image_bytes("png", (16, 16), seed=1)
    taller = with_size(Base(base, ImageInfo("png", 16, 16, 1)), 16, 64)  # valid CRC, a quarter of the rows
    Image.open(io.BytesIO(taller)).load()  # Pillow is fine with it
    assert cv2.imdecode(np.frombuffer(taller, np.uint8), cv2.IMREAD_COLOR) is None
    with pytest.raises(ImageError) as caught:
        inspect_image(taller, MAX_PIXELS)
    assert caught.value.code == "image_unreadable" and "OpenCV" in caught.value.message


def test_a_png_whose_image_data_fails_its_crc_is_refused():
    """Found by the fuzz test: Pillow does not check the IDAT chunk's CRC, libpng (OpenCV) does, and fails."""
    data = bytearray(image_bytes("png", (16, 16), seed=3))
    at = data.find(b"IDAT")
    crc_at = at + 4 + int.from_bytes(data[at - 4 : at], "big")
    data[crc_at] ^= 0x01  # the image data is intact, its checksum is not
    Image.open(io.BytesIO(bytes(data))).load()  # Pillow is fine with it
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None
    with pytest.raises(ImageError) as caught:
        inspect_image(bytes(data), MAX_PIXELS)
    assert caught.value.code == "image_unreadable" and "'IDAT' fails its checksum" in caught.value.message


def test_a_bmp_whose_palette_size_opencv_refuses_is_refused():
    """Found by the fuzz test: a 1-bit BMP announcing 23 palette colours; Pillow reads it, OpenCV does not."""
    data = bytearray(_pillow("bmp", "1").data)
    data[46:50] = (23).to_bytes(4, "little")  # biClrUsed
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None
    with pytest.raises(ImageError) as caught:
        inspect_image(bytes(data), MAX_PIXELS)
    assert caught.value.code == "image_unreadable" and "OpenCV" in caught.value.message


def test_a_jpeg_whose_exif_readers_disagree_is_refused():
    """Found by the fuzz test: a broken EXIF block before the real one; Pillow reads the first (orientation 1),
    OpenCV the valid one (6), so labels written for the stored frame would be rotated wrongly in training."""
    real = image_bytes("jpeg", (40, 30), seed=2, exif_orientation=6)
    data = with_exif(Base(real, ImageInfo("jpeg", 40, 30, 6)), b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00")
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (40, 30), "OpenCV applies orientation 6"
    with pytest.raises(ImageError) as caught:
        inspect_image(data, MAX_PIXELS)
    assert caught.value.code == "image_unreadable" and "orientation" in caught.value.message


def test_a_tiny_jpeg_that_opencv_turns_by_an_exif_entry_pillow_ignores_is_refused():
    """Found by the fuzz test: an orientation entry of no valid type, which Pillow ignores (orientation 1) and
    OpenCV applies (5: transposed). Decoded at 1/8, the 16x12 image is 2x2 pixels that look the same turned."""
    real = image_bytes("jpeg", (16, 12), seed=2)
    entry = b"\x01\x12" + b"\x00\x00" + b"\x00\x00\x00\x00" + b"\x00\x05\x00\x00"  # tag, type 0, count 0, value 5
    data = with_exif(Base(real, ImageInfo("jpeg", 16, 12, 1)), b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01" + entry)
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (16, 12), "OpenCV shows it transposed: 12 wide, 16 high"
    with pytest.raises(ImageError) as caught:
        inspect_image(data, MAX_PIXELS)
    assert caught.value.code == "image_unreadable" and "orientation reads as 1" in caught.value.message
