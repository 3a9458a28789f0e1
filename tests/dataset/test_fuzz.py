"""Fuzz: hypothesis-generated XML and image bytes -> a parsed value or a reported issue, never an exception.

Structured VOC-ish trees with hostile values (huge, negative, NaN, inf, empty and non-numeric coordinates,
unicode, deep nesting, missing elements, random attributes), every encoding and BOM, DTDs and entities,
truncated and mutated documents, raw bytes; valid JPEG/PNG/BMP/WebP images cut short, bit-flipped, with a
wrong magic, lying headers or garbage EXIF; and whole tiny datasets of them. They go through
`voc.parse_annotation`, `images.inspect_image`, `validate.validate_dataset` and, for every accepted sample,
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
import re
import struct
import tempfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from factory import data_config, image_bytes
from visapp.config import DataConfig
from visapp.dataset.convert import convert
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.images import ImageError, ImageInfo, displayed_size, inspect_image, sniff_format
from visapp.formats.report import CODES
from visapp.formats.voc import BOX_KEYS, Annotation, AnnotationError, VocObject, parse_annotation

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
    objects: int = 0  # the number of direct <object> children (when expect == "ok")
    filename: str | None = None


# (python codec, declared encoding or None for no declaration, BOM, honest): an honest document must parse.
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
    ("cp1252", None, b"", False),  # a code page without a declaration: not UTF-8
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
def documents(draw, objects=None, filename=None, size=None, tidy: bool = False) -> Doc:
    """A VOC-ish annotation, serialized in one of ENCODINGS, maybe with a DTD, maybe mutated afterwards.

    Mostly honest encodings, no DTD and no mutation, so that most documents reach the VOC reading; `tidy`
    (for datasets) always so.
    """
    hostile = not tidy and draw(st.integers(0, 3)) == 0
    roots = ["annotation"] * 12 + ["Annotation", "ANNOTATION", "annotations", "object", "svg"]
    root_tag = draw(st.sampled_from(roots)) if hostile else "annotation"
    object_list = draw(objects if objects is not None else st.lists(object_nodes(), max_size=4))
    children = list(object_list)
    name_text = draw(filename if filename is not None else st.one_of(st.none(), NAME_TEXT, LEGAL_TEXT))
    if name_text is not None:
        children.append(Node("filename", name_text))
    if draw(st.integers(0, 5)):
        children.append(draw(size if size is not None else size_nodes()))
    children += draw(st.lists(junk_nodes(), max_size=3))
    root = Node(root_tag, attrs=draw(ATTRS), children=draw(st.permutations(children)))
    body = render(root)
    if tidy:
        body = _XML_ILLEGAL.sub("", body)

    codec, declared, bom, honest = draw(st.sampled_from(ENCODINGS if hostile else [e for e in ENCODINGS if e[3]]))
    decl = "" if declared is None else f'<?xml version="1.0"{f" encoding={declared!r}" if declared else ""}?>'
    doctype = draw(st.none() | st.sampled_from(DOCTYPES)) if hostile else None
    text = decl + draw(MISC) + (doctype or "") + draw(MISC) + body + draw(MISC)
    data = bom + _encode(text, codec)
    mutated = not tidy and draw(st.integers(0, 4)) == 0
    if mutated:
        data = draw(mutations(data))

    if mutated or not honest:
        return Doc(data, "any")
    if doctype:
        return Doc(data, "unsafe")
    # Legal characters only, once encoded (a code page writes the others as legal character references).
    if _XML_ILLEGAL.search(body):
        return Doc(data, "malformed" if root_tag.lower() == "annotation" else "any")
    if root_tag.lower() != "annotation":
        return Doc(data, "malformed")
    expected_name = _normalise(name_text).strip() if name_text is not None else ""
    return Doc(data, "ok", objects=len(object_list), filename=expected_name or None)


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
    # "ok": accepted as `info`; "truncated": refused; "exif-garbage": accepted in its size, or refused for
    # its orientation; "any": accepted or refused
    expect: str
    info: ImageInfo | None = None


@st.composite
def images(draw) -> FuzzImage:
    base = draw(st.sampled_from(bases()))
    data, n = base.data, len(base.data)
    kind = draw(
        st.sampled_from(["valid", "cut", "flip", "overwrite", "magic", "exif", "size", "append", "random", "magic+"])
    )
    if kind == "valid":
        return FuzzImage(data, "ok", base.info)
    if kind == "cut":
        return FuzzImage(data[: draw(st.integers(0, n - 1))], "truncated")
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
        info = inspect_image(data)
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
    assert (shown.shape[1], shown.shape[0]) == displayed_size(info.width, info.height, info.orientation)
    return info


@fuzz_settings("images")
@given(images())
def test_any_image_bytes_decode_or_are_reported(image):
    outcome = inspect_or_issue(image.data)
    event(f"expected {image.expect}, got {getattr(outcome, 'code', 'an image')}")
    if image.expect == "ok":
        assert outcome == image.info
    elif image.expect == "truncated":
        assert isinstance(outcome, ImageError), "an image cut short was accepted"
    elif image.expect == "exif-garbage" and isinstance(outcome, ImageError):
        assert "orientation" in outcome.message, f"garbage EXIF rejected a valid image: {outcome}"
    elif image.expect == "exif-garbage":
        assert (outcome.format, outcome.width, outcome.height) == (
            image.info.format,
            image.info.width,
            image.info.height,
        )


# ================================================================ whole datasets -> validate -> convert


# File names that are legal on Linux and hostile to line-based lists: spaces, '#', line breaks.
STEMS = weighted(
    (st.sampled_from(["000001", "a b", "\u00fcn\u00efcode", "x.y", "Zz", "#hash", "-dash", "000001 "]), 19),
    (st.sampled_from(["line\nbreak", "p\u2028q"]), 1),
)


@dataclass
class FuzzSample:
    stem: str
    image: bytes | None
    suffix: str
    xml: bytes | None


def valid_images() -> st.SearchStrategy[FuzzImage]:
    return st.sampled_from(bases()).map(lambda base: FuzzImage(base.data, "ok", base.info))


@st.composite
def plausible_objects(draw, width: int, height: int) -> Node:
    """An object that often passes every check: a known class, a box mostly inside the image."""
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
    return Node("object", children=children)


@st.composite
def samples(draw, stem: str) -> FuzzSample:
    image = draw(weighted((valid_images(), 16), (images(), 3), (st.none(), 1)))
    base_info = image.info if image is not None else None
    fmt = sniff_format(image.data[:12]) if image is not None else None
    suffix = draw(st.sampled_from([SUFFIX.get(fmt or "", ".jpg"), ".jpg", ".PNG", ".jpeg", ".webp"]))
    width, height = (base_info.width, base_info.height) if base_info else (64, 48)
    xml = None
    if draw(st.integers(0, 9)):
        shown = displayed_size(width, height, base_info.orientation) if base_info else (width, height)
        size_w, size_h = draw(st.sampled_from([(width, height), (width, height), shown, ("0", "0")]))
        size = size_nodes(str(size_w), str(size_h), keep=True)
        objects = st.lists(weighted((plausible_objects(width, height), 15), (object_nodes(), 1)), max_size=4)
        doc = draw(
            documents(
                objects=objects,
                filename=st.sampled_from([f"{stem}{suffix}", "other.jpg", ""]),
                size=size,
                tidy=draw(st.integers(0, 4)) > 0,
            )
        )
        xml = doc.data
    return FuzzSample(stem, image.data if image else None, suffix, xml)


@dataclass
class FuzzDataset:
    samples: list[FuzzSample]
    image_sets: dict[str, list[str]]
    data: DataConfig
    seed: int


@st.composite
def datasets(draw) -> FuzzDataset:
    stems = draw(st.lists(STEMS, min_size=1, max_size=3, unique=True))
    made = [draw(samples(stem)) for stem in stems]
    if len(made) > 1 and draw(st.integers(0, 5)) == 0:  # a byte-identical copy
        made[-1].image = made[0].image
    image_sets = {}
    if draw(st.integers(0, 3)) == 0:
        for split in draw(st.lists(st.sampled_from(["train", "val", "test"]), unique=True, max_size=3)):
            image_sets[split] = draw(st.lists(st.sampled_from([*stems, "ghost"]), max_size=3))
    data = data_config(
        classes=list(CLASSES),
        on_error="skip",
        allow_background=draw(st.integers(0, 3)) > 0,
        bbox_tolerance_px=draw(st.sampled_from([0.0, 2.0, 5.5])),
        one_based_coords=draw(st.booleans()),
        include_difficult=draw(st.booleans()),
    )
    return FuzzDataset(made, image_sets, data, draw(st.integers(0, 3)))


def write_dataset(raw: Path, dataset: FuzzDataset) -> None:
    for sample in dataset.samples:
        if sample.image is not None:
            path = raw / "JPEGImages" / f"{sample.stem}{sample.suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample.image)
        if sample.xml is not None:
            path = raw / "Annotations" / f"{sample.stem}.xml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample.xml)
    if dataset.image_sets:
        main = raw / "ImageSets" / "Main"
        main.mkdir(parents=True)
        for split, ids in dataset.image_sets.items():
            (main / f"{split}.txt").write_text("# fuzz\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")


def check_report(report: dict, rows: list[dict], raw: Path, data: DataConfig) -> None:
    """report.json as documented: counts that add up, known codes with their severities, sorted issues."""
    assert set(report) == {"samples", "accepted", "rejected", "warnings", "by_code", "issues"}
    assert report["accepted"] + report["rejected"] == report["samples"]
    assert report["accepted"] == len(rows)
    issues = report["issues"]
    assert [(i["path"], i["code"]) for i in issues] == sorted((i["path"], i["code"]) for i in issues)
    for issue in issues:
        assert set(issue) == {"path", "code", "severity", "message"}
        assert issue["code"] in REPORT_SEVERITY, issue
        expected = REPORT_SEVERITY[issue["code"]]
        if issue["code"] == "annotation_missing" and not data.allow_background:
            expected = "error"
        assert issue["severity"] == expected, issue
        assert issue["message"].strip()
        assert (raw / issue["path"]).exists(), f"an issue names a path that is not there: {issue}"
    assert report["by_code"] == dict(sorted(Counter(i["code"] for i in issues).items()))
    assert report["warnings"] == sum(i["severity"] == "warning" for i in issues)
    json.dumps(report, allow_nan=False)


def check_rows(rows: list[dict], raw: Path, data: DataConfig) -> None:
    """Manifest rows: sorted, unique ids, finite boxes inside the frame they refer to, known classes."""
    assert [row["image"] for row in rows] == sorted(row["image"] for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        json.dumps(row, allow_nan=False)
        assert (raw / row["image"]).is_file()
        assert row["boxes_frame"] in ("stored", "rotated") and 1 <= row["orientation"] <= 8
        frame_w, frame_h = (row["width"], row["height"])
        if row["boxes_frame"] == "rotated":
            frame_w, frame_h = displayed_size(row["width"], row["height"], row["orientation"])
        for obj in row["objects"]:
            assert obj["class_id"] == data.classes.index(obj["name"])
            assert 0 <= obj["xmin"] < obj["xmax"] <= frame_w and 0 <= obj["ymin"] < obj["ymax"] <= frame_h, obj


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


@fuzz_settings("datasets")
@given(datasets())
def test_any_dataset_validates_to_reported_issues_and_converts_to_valid_yolo(dataset):
    with tempfile.TemporaryDirectory(prefix="vis-fuzz-") as scratch:
        raw, out = Path(scratch) / "raw", Path(scratch) / "out"
        raw.mkdir()
        write_dataset(raw, dataset)
        result = validate_dataset(raw, dataset.data)
        rows = [asdict(row) for row in result.rows]
        event(f"{len(rows)} of {result.report['samples']} samples accepted")
        for code in result.report["by_code"]:
            event(code)
        check_report(result.report, rows, raw, dataset.data)
        check_rows(rows, raw, dataset.data)
        write_validation(result, out / "validated", on_error="skip")
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
        inspect_image(taller)
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
        inspect_image(bytes(data))
    assert caught.value.code == "image_unreadable" and "'IDAT' fails its checksum" in caught.value.message


def test_a_bmp_whose_palette_size_opencv_refuses_is_refused():
    """Found by the fuzz test: a 1-bit BMP announcing 23 palette colours; Pillow reads it, OpenCV does not."""
    data = bytearray(_pillow("bmp", "1").data)
    data[46:50] = (23).to_bytes(4, "little")  # biClrUsed
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None
    with pytest.raises(ImageError) as caught:
        inspect_image(bytes(data))
    assert caught.value.code == "image_unreadable" and "OpenCV" in caught.value.message


def test_a_jpeg_whose_exif_readers_disagree_is_refused():
    """Found by the fuzz test: a broken EXIF block before the real one; Pillow reads the first (orientation 1),
    OpenCV the valid one (6), so labels written for the stored frame would be rotated wrongly in training."""
    real = image_bytes("jpeg", (40, 30), seed=2, exif_orientation=6)
    data = with_exif(Base(real, ImageInfo("jpeg", 40, 30, 6)), b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00")
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (40, 30), "OpenCV applies orientation 6"
    with pytest.raises(ImageError) as caught:
        inspect_image(data)
    assert caught.value.code == "image_unreadable" and "orientation" in caught.value.message
