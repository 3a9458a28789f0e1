"""A Pascal VOC annotation (XML) <-> its values: parsing in any declared encoding, with defusedxml's refusals,
and writing a tidy one. Where annotations and images lie, and how they pair, is `visapp.formats.voc_layout`.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from visapp.errors import DataError

BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


class AnnotationError(DataError):
    """An annotation file that cannot be used: `code` is `xml_malformed` or `xml_unsafe`."""


@dataclass(frozen=True)
class VocObject:
    """One `<object>`. bndbox maps xmin/ymin/xmax/ymax to a float, or to the raw text when it is not a finite
    number; a missing coordinate is absent from the dict."""

    name: str
    difficult: bool = False
    truncated: bool = False
    bndbox: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Annotation:
    """A parsed VOC annotation. width/height are None when `<size>` (or the value) is absent, 0 or not a number."""

    filename: str | None
    width: int | float | None
    height: int | float | None
    objects: list[VocObject] = field(default_factory=list)


# ---------------------------------------------------------------- parsing

# What a VOC tool writes for a number: ASCII decimal, optional sign, fraction and exponent. float() would also
# take "1_000", "nan", "inf" and non-ASCII digits ("١٢"), none of which a tool writes on purpose.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The XML declaration's encoding (the declaration is ASCII in every ASCII-compatible encoding).
_DECLARED_ENCODING = re.compile(rb"""\A\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
# The encoding names expat knows itself (in any case); a document declaring any other name, Python's aliases of
# these included (`utf8`, `utf16`, `latin1`), is decoded here first: expat reads only single-byte encodings by
# other names, so `encoding="utf8"` fails at the first non-ASCII character, and GBK or Shift_JIS at once.
_EXPAT_NAMES = frozenset({"utf-8", "utf-16", "utf-16be", "utf-16le", "iso-8859-1", "us-ascii"})
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class _Element:
    """One parsed element: its tag in lower case without a namespace (VOC tags are matched without regard to
    case: some tools write `<Xmin>`), its text before the first child, and its child elements."""

    __slots__ = ("children", "parts", "raw_tag", "tag")

    def __init__(self, raw_tag: str) -> None:
        self.raw_tag = raw_tag
        self.tag = raw_tag.rpartition("}")[2].lower()
        self.parts: list[str] = []
        self.children: list[_Element] = []


def _text(element: _Element | None) -> str:
    return "".join(element.parts).strip() if element is not None and element.parts else ""


def _children(parent: _Element | None) -> dict[str, _Element]:
    """Direct children by tag, the first of each name."""
    found: dict[str, _Element] = {}
    for child in parent.children if parent is not None else ():
        found.setdefault(child.tag, child)
    return found


def _number(text: str) -> float | None:
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _dimension(text: str) -> int | float | None:
    """A `<size>` value: None when absent, 0, negative or not a number (the decoded size is used then)."""
    value = _number(text)
    if value is None or value <= 0:
        return None
    return int(value) if value.is_integer() else value


def _flag(text: str) -> bool:
    """`<difficult>` / `<truncated>`: empty or absent reads as 0."""
    value = _number(text)
    if value is not None:
        return value != 0
    return text.lower() in ("true", "yes")


def _object(element: _Element) -> VocObject:
    children = _children(element)
    box: dict[str, float | str] = {}
    coordinates = _children(children.get("bndbox"))
    for key in BOX_KEYS:
        if key in coordinates:
            raw = _text(coordinates[key])
            value = _number(raw)
            box[key] = raw if value is None else value
    return VocObject(
        name=_text(children.get("name")),
        difficult=_flag(_text(children.get("difficult"))),
        truncated=_flag(_text(children.get("truncated"))),
        bndbox=box,
    )


def _unsafe_reason(data: bytes) -> str:
    """Say what defusedxml refused (it stops at the DTD, before looking at what the DTD declares)."""
    head = data[: data.find(b"]>") + 2 if b"]>" in data else 4096].upper()
    if b"<!ENTITY" in head and (b"SYSTEM" in head.split(b"<!ENTITY", 1)[1] or b"PUBLIC" in head):
        what = "declares an external entity (it could read local files or the network)"
    elif b"<!ENTITY" in head:
        what = "declares entities (an entity-expansion bomb can exhaust memory)"
    else:
        what = "has a DTD (<!DOCTYPE ...>)"
    return f"refused: the XML {what}; VOC annotations need no DTD: remove it"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decoded(data: bytes) -> bytes | str:
    """The document as expat can read it: the bytes, or text decoded here from an encoding expat lacks.

    Raises:
        AnnotationError: `xml_malformed` for an unknown declared encoding, bytes that are not valid in the
            declared encoding (or the one their byte order mark says), or bytes that are not UTF-8 when no
            encoding is declared.
    """
    bom = next((codec for mark, codec in _BOMS if data.startswith(mark)), None)
    if bom == "utf-16":  # the declaration, if any, is in UTF-16 too
        head = data[:512].decode("utf-16", "replace").encode("utf-8", "replace")
    else:
        head = data[len(codecs.BOM_UTF8) :] if bom else data
    match = _DECLARED_ENCODING.match(head)
    declared = match.group(1).decode("ascii", "replace").strip() if match else ""
    if bom is not None:  # the byte order mark says what the bytes are
        return data if declared.lower() in {"", *_EXPAT_NAMES} else _decode(data, bom, declared or bom)
    if not declared:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AnnotationError(
                "xml_malformed",
                f"is not UTF-8 (byte 0x{data[exc.start]:02X} on line {_line_of(data, exc.start)}) and declares no "
                "other encoding: re-save it as UTF-8 (e.g. `iconv -f WINDOWS-1252 -t UTF-8`), or declare its "
                'encoding (<?xml version="1.0" encoding="windows-1252"?>)',
            ) from None
        return data
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise AnnotationError(
            "xml_malformed",
            f"declares the encoding {declared!r}, which is unknown: re-save it as UTF-8 and declare "
            'encoding="UTF-8" (e.g. `iconv -f <its real encoding> -t UTF-8`)',
        ) from None
    return data if declared.lower() in _EXPAT_NAMES else _decode(data, codec, declared)


def _decode(data: bytes, codec: str, declared: str) -> str:
    """The document decoded here; expat reads text as UTF-8 whatever its declaration says."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            "xml_malformed",
            f"declares the encoding {declared!r}, but byte 0x{data[exc.start]:02X} on line "
            f"{_line_of(data, exc.start)} is not valid {declared}: re-save it in that encoding, or as UTF-8 with "
            'encoding="UTF-8"',
        ) from None


def parse_annotation(data: bytes) -> Annotation:
    """Parse one VOC XML document, refusing what defusedxml refuses.

    Tags are matched without regard to case or namespace (`<Object>`, `<ANNOTATION>`). The document may be in
    any encoding its declaration names (GBK, Shift_JIS, Windows-1252, ...); without a declaration it must be
    UTF-8 (or UTF-16 with a byte order mark). `<part>`, `<actions>`, `<point>` and other elements are ignored;
    only direct `<object>` children of `<annotation>` are objects (a `<part>` has its own `<name>` and
    `<bndbox>`).

    Raises:
        AnnotationError: `xml_unsafe` for a DTD, an entity declaration or an external reference;
            `xml_malformed` for XML that is not well-formed, not in its declared encoding, or whose root is
            not `<annotation>`.
    """
    from xml.parsers.expat import ExpatError

    from defusedxml import DefusedXmlException

    document = _decoded(data)
    try:
        root = _element_tree(document)
    except DefusedXmlException:
        raise AnnotationError("xml_unsafe", _unsafe_reason(data)) from None
    except ExpatError as exc:
        raise AnnotationError("xml_malformed", f"not well-formed XML ({exc})") from None
    except Exception as exc:  # expat's own refusals, e.g. an encoding it cannot read
        raise AnnotationError("xml_malformed", f"cannot be parsed ({type(exc).__name__}: {exc})") from None
    if root.tag != "annotation":
        shown = f"{{{root.raw_tag}" if "}" in root.raw_tag else root.raw_tag
        raise AnnotationError("xml_malformed", f"root element is <{shown}>, not <annotation>: not a VOC annotation")
    children = _children(root)
    size = _children(children.get("size"))
    return Annotation(
        filename=_text(children.get("filename")) or None,
        width=_dimension(_text(size.get("width"))),
        height=_dimension(_text(size.get("height"))),
        objects=[_object(child) for child in root.children if child.tag == "object"],
    )


def _element_tree(document: bytes | str) -> _Element:
    """The document's elements, read by expat with defusedxml's refusals: no DTD, no entity declaration, no
    external reference (each raises a `DefusedXmlException`).

    defusedxml's own ElementTree parser drives expat through ElementTree's pure-Python parser, which spent
    most of an annotation's parse time in Python callbacks; these handlers keep only what a VOC annotation
    needs. Expat is the same parser (namespaces split at `}` as ElementTree does), so what it rejects, and
    its messages, are the same.
    """
    from xml.parsers import expat

    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

    root = _Element("")  # holds the document element
    stack = [root]

    def start(name: str, _attributes: object) -> None:
        element = _Element(name)
        stack[-1].children.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if not stack[-1].children:  # an element's text is what comes before its first child
            stack[-1].parts.append(data)

    def doctype(name: str, sysid: str | None, pubid: str | None, _internal: bool) -> None:
        raise DTDForbidden(name, sysid, pubid)

    def entity(name: str, *args: object) -> None:
        raise EntitiesForbidden(name, None, None, None, None, None)

    def external(_context: str, base: str | None, sysid: str | None, pubid: str | None) -> NoReturn:
        raise ExternalReferenceForbidden(_context, base, sysid, pubid)

    parser = expat.ParserCreate(None, "}")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = external
    parser.Parse(document, True)
    return root.children[0]


def object_label(index: int, obj: VocObject) -> str:
    """How messages name an annotation's object: `object 2 (dog)`, 1-based, in the order of the file."""
    return f"object {index} ({obj.name})" if obj.name else f"object {index}"


def box_corners(obj: VocObject, label: str) -> tuple[float, float, float, float]:
    """An object's box as (xmin, ymin, xmax, ymax): the one rule for a usable box, that validation
    (`bbox_invalid`) and the dataset diff both apply.

    Raises:
        DataError: `bbox_invalid`, its message starting with `label`: no coordinates, one missing or not a
            number, or an empty box (min >= max on either axis).
    """
    box = obj.bndbox
    missing = [key for key in BOX_KEYS if key not in box]
    if len(missing) == len(BOX_KEYS):
        raise DataError("bbox_invalid", f"{label} has no <bndbox> coordinates")
    if missing:
        raise DataError("bbox_invalid", f"{label}: <bndbox> lacks {', '.join(f'<{k}>' for k in missing)}")
    bad = [f"<{key}> {box[key]!r}" for key in BOX_KEYS if isinstance(box[key], str)]
    if bad:
        raise DataError("bbox_invalid", f"{label}: not a number: {', '.join(bad)}")
    xmin, ymin, xmax, ymax = (float(box[key]) for key in BOX_KEYS)
    if xmin >= xmax or ymin >= ymax:
        raise DataError("bbox_invalid", f"{label}: empty box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}); need min < max")
    return xmin, ymin, xmax, ymax


def base_name(filename: str) -> str:
    """The file name at the end of a `<filename>`, which may be a Windows or POSIX path (`C:\\data\\a.jpg`)."""
    return re.split(r"[\\/]", filename.strip())[-1]


def _xml_number(value: float | str) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def annotation_xml(
    filename: str,
    width: int,
    height: int,
    objects: list[VocObject],
    folder: str = "VOC",
    database: str | None = None,
    depth: int = 3,
) -> str:
    """A tidy VOC annotation, as labelImg and the VOC devkit write it (tab-indented, one object a block)."""
    from xml.sax.saxutils import escape

    parts = ["<annotation>", f"\t<folder>{escape(folder)}</folder>", f"\t<filename>{escape(filename)}</filename>"]
    if database is not None:
        parts.append(f"\t<source><database>{escape(database)}</database></source>")
    parts += [
        f"\t<size><width>{width}</width><height>{height}</height><depth>{depth}</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        box = "".join(f"<{key}>{_xml_number(obj.bndbox[key])}</{key}>" for key in BOX_KEYS)
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(obj.name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            f"\t\t<bndbox>{box}</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def annotation_filename(path: Path) -> str | None:
    """The `<filename>` of an annotation file, or None when it has none or cannot be read or parsed."""
    try:
        return parse_annotation(path.read_bytes()).filename
    except (OSError, AnnotationError):
        return None
