"""A Pascal VOC folder <-> its samples (image + annotation pairs), annotations and ImageSets splits.

Layouts (folder names matched without regard to case), decided from the folder names at the top of the
dataset folder, so that an unreadable `Annotations/` still means the paired layout:

- paired: an annotation folder (`Annotations/`, `Annotation/`, or `labels/`, `xml/`, `xmls/` when they hold
  XML) and image folders `JPEGImages/` and/or `images/` (when neither exists, the images are every image
  outside the annotation folder); an annotation and an image pair up when their paths inside their folders
  agree without the extension (`Annotations/sub/a.xml` <-> `JPEGImages/sub/a.jpg`);
- flat: no annotation folder; each XML sits beside its image, at any depth (`sub/a.xml` <-> `sub/a.png`).

Pairs are made by name exactly, then by name in Unicode NFC without regard to case, then an annotation left
over is matched by the base name of its `<filename>` (a Windows or POSIX path) to an image left over (in the
flat layout, in the same folder). What still does not pair is flagged, never silently a background: a second
annotation for a paired image is its rival, and lone files with look-alike names, or whose partner's folder
cannot be read, carry a hint. Hidden files and folders, and `ImageSets/`, are skipped. An image is a file
with an image extension, or any other file whose first bytes are JPEG/PNG/BMP/WebP.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visapp.errors import DataError
from visapp.formats import SPLITS
from visapp.formats.images import has_image_suffix, sniff_format
from visapp.fsio import is_plain_relpath, unreadable

# Annotation folders, in order of preference; the last ones count only when they hold XML (`labels/` may hold
# YOLO text files).
ANNOTATION_DIRS = ("annotations", "annotation", "labels", "xml", "xmls")
NAMED_ANNOTATION_DIRS = frozenset({"annotations", "annotation"})
IMAGE_DIRS = ("jpegimages", "images")  # in this order of preference when an id would collide
IMAGE_SETS_DIR = ("ImageSets", "Main")  # the split lists: ImageSets/Main/{train,val,test}.txt
BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


class AnnotationError(DataError):
    """An annotation file that cannot be used: `code` is `xml_malformed` or `xml_unsafe`."""


@dataclass(frozen=True)
class SampleFiles:
    """One sample: paths relative to the dataset folder (POSIX), either may be missing."""

    image: str | None
    annotation: str | None
    rivals: tuple[str, ...] = ()  # other annotations with this image's name: which one is right is unknown
    hint: str | None = None  # for a lone file: why a partner it may have was not paired


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
# The encodings expat reads itself; any other declared encoding is decoded here first (expat cannot read
# multi-byte ones such as GBK, Shift_JIS or EUC-KR).
_EXPAT_ENCODINGS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "iso8859-1", "ascii"})


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
            declared encoding, or bytes that are not UTF-8 when no encoding is declared.
    """
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data  # expat reads these by their byte order mark
    match = _DECLARED_ENCODING.match(data)
    declared = match.group(1).decode("ascii", "replace").strip() if match else ""
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
    if codec in _EXPAT_ENCODINGS:
        return data
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            "xml_malformed",
            f"declares the encoding {declared!r}, but byte 0x{data[exc.start]:02X} on line "
            f"{_line_of(data, exc.start)} is not valid {declared}: re-save it in that encoding, or as UTF-8 with "
            'encoding="UTF-8"',
        ) from None
    return text  # expat reads text as UTF-8 whatever the declaration says


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

    def external(_context: str, base: str | None, sysid: str | None, pubid: str | None) -> None:
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


def image_set_text(ids: list[str]) -> str:
    """An ImageSets/Main list: one id a line."""
    return "".join(f"{ident}\n" for ident in ids)


def annotation_filename(path: Path) -> str | None:
    """The `<filename>` of an annotation file, or None when it has none or cannot be read or parsed."""
    try:
        return parse_annotation(path.read_bytes()).filename
    except (OSError, AnnotationError):
        return None


# ---------------------------------------------------------------- image sets


Problems = list[tuple[str, str]]  # (path relative to the dataset folder, what is wrong and what to do)


def _entries(folder: Path, rel: str, problems: Problems) -> list[os.DirEntry[str]]:
    """A folder's entries, sorted; an unreadable folder is a problem (nothing in it can be checked)."""
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        problems.append((rel or ".", unreadable(exc, folder, "this folder")))
        return []


def _find_dir(parent: Path, rel: str, name: str, problems: Problems) -> tuple[Path, str] | None:
    """The child folder named `name` without regard to case (the exact name first), and its relative path."""
    children = [e for e in _entries(parent, rel, problems) if e.name.lower() == name.lower()]
    children.sort(key=lambda entry: entry.name != name)
    for entry in children:
        if entry.is_dir():
            return Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name
    return None


@dataclass(frozen=True)
class ImageSet:
    """One ImageSets/Main list: its path (relative to the dataset folder) and the ids it names (see listed_id)."""

    path: str
    ids: frozenset[str]


def listed_id(word: str) -> str:
    """An id as an ImageSets list writes it, in the form `sample_id` gives: Unicode NFC, without a leading
    image folder or an image extension (`JPEGImages/000001.jpg` -> `000001`; `img.v2` stays)."""
    ident = unicodedata.normalize("NFC", word.strip().removeprefix("./"))
    head, _, rest = ident.partition("/")
    if rest and head.lower() in IMAGE_DIRS:
        ident = rest
    return ident[: ident.rfind(".")] if has_image_suffix(ident) else ident


def _list_ids(text: str) -> frozenset[str]:
    """The ids of one list: one a line; a line starting with `#` is a comment (`dog#1` is an id); VOC's class
    lists (`000005 -1`) give their first word."""
    ids = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) == 2 and words[1] in ("-1", "0", "1"):
            line = words[0]
        ids.add(listed_id(line))
    return frozenset(ids)


def read_image_sets(raw_dir: Path, problems: Problems | None = None) -> dict[str, ImageSet]:
    """ImageSets/Main/{train,val,test}.txt -> {split: ImageSet}; {} when there are none.

    A UTF-8 byte order mark and CRLF line ends are taken off. A list or folder that cannot be read is added to
    `problems`: splits must never fall back to hashing without a word.
    """
    problems = [] if problems is None else problems
    sets_dir = _find_dir(Path(raw_dir), "", IMAGE_SETS_DIR[0], problems)
    main_dir = _find_dir(sets_dir[0], sets_dir[1], IMAGE_SETS_DIR[1], problems) if sets_dir else None
    if main_dir is None:
        return {}
    found: dict[str, ImageSet] = {}
    files = {entry.name.lower(): entry for entry in _entries(main_dir[0], main_dir[1], problems)}
    for split in SPLITS:
        entry = files.get(f"{split}.txt")
        if entry is None:
            continue
        rel = f"{main_dir[1]}/{entry.name}"
        try:
            text = Path(entry.path).read_text(encoding="utf-8-sig", errors="replace")
        except OSError as exc:
            problems.append((rel, unreadable(exc, entry.path, f"the {split} list")))
            continue
        found[split] = ImageSet(rel, _list_ids(text))
    return found


# ---------------------------------------------------------------- discovery


@dataclass
class _Tree:
    """What a walk of the dataset folder found: files and folders (relative POSIX paths), unreadable folders."""

    files: list[str] = field(default_factory=list)
    folders: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)

    def blocked(self, folder: str) -> str | None:
        """The unreadable folder that `folder` is, or lies in; None when it could be read."""
        parts = folder.split("/")
        prefixes = ("/".join(parts[:n]) for n in range(1, len(parts) + 1))
        return next((prefix for prefix in prefixes if prefix in self.unreadable), None)


def _walk(raw_dir: Path, problems: Problems) -> _Tree:
    """Every visible file under raw_dir; ImageSets/ at the top is skipped.

    Only regular files and symlinks (a dangling one is then reported when read) are listed: reading a FIFO or
    a device named `x.jpg` would block. Folder symlinks are not followed (no loops). A folder or an entry that
    cannot be read is added to `problems`.
    """
    tree = _Tree()
    stack = [("", raw_dir)]
    while stack:
        prefix, folder = stack.pop()
        before = len(problems)
        entries = _entries(folder, prefix.rstrip("/"), problems)
        if len(problems) > before:
            tree.unreadable.add(prefix.rstrip("/"))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if prefix or entry.name.lower() != IMAGE_SETS_DIR[0].lower():
                        tree.folders.add(rel)
                        stack.append((f"{rel}/", Path(entry.path)))
                elif entry.is_symlink() or entry.is_file(follow_symlinks=False):
                    tree.files.append(rel)
            except OSError as exc:
                problems.append((rel, unreadable(exc, entry.path, "this entry")))
    tree.files.sort()
    return tree


def _is_image(raw_dir: Path, rel: str, problems: Problems) -> bool:
    """An image by its name, else by its first bytes; a file that cannot be opened to tell is a problem."""
    if has_image_suffix(rel) or rel.lower().endswith(".xml"):
        return has_image_suffix(rel)
    try:
        with (raw_dir / rel).open("rb") as handle:
            return sniff_format(handle.read(12)) is not None
    except OSError as exc:
        problems.append((rel, unreadable(exc, raw_dir / rel, "this file (it may be an image)")))
        return False


def _name(rel: str) -> str:
    """The last part of a path."""
    return rel.rpartition("/")[2] if is_plain_relpath(rel) else PurePosixPath(rel).name


def _folder(rel: str) -> str:
    """The folder of a path (`.` at the top)."""
    return (rel.rpartition("/")[0] or ".") if is_plain_relpath(rel) else str(PurePosixPath(rel).parent)


def _strip_suffix(rel: str) -> str:
    """The path without its extension, as PurePosixPath's `suffix` defines it (`.bashrc` and `a.` have none)."""
    path = rel if is_plain_relpath(rel) else str(PurePosixPath(rel))
    folder, slash, name = path.rpartition("/")
    dot = name.rfind(".")
    return folder + slash + name[:dot] if 0 < dot < len(name) - 1 else rel


def fold(name: str) -> str:
    """The form in which two spellings of a name are the same: Unicode NFC (macOS writes NFD), case folded."""
    return unicodedata.normalize("NFC", name).casefold()


_COPY_MARK = re.compile(r"(?:\s*\(\d+\)|[\s_-]*(?:-\s*)?copy(?:\s*\d+)?)$", re.IGNORECASE)


def _loose(rel: str) -> str:
    """A name reduced to what a person would call "the same name": stem only, letters and digits, without a
    copy mark (`IMG_0001 (1).JPG`, `img-0001 - Copy.jpeg` -> `img0001`)."""
    stem = _COPY_MARK.sub("", _name(_strip_suffix(rel)))
    return "".join(ch for ch in unicodedata.normalize("NFKC", stem).casefold() if ch.isalnum())


@dataclass
class _Layout:
    """Where annotations and images live: `annotations` is None for the flat layout."""

    annotations: str | None
    image_tops: list[str]

    def key(self, rel: str, is_xml: bool) -> str | None:
        """The name an annotation and its image share (folder and stem inside their folders); None: not a
        candidate (an XML outside the annotation folder, a file under it that is not XML)."""
        top = rel.split("/", 1)[0] if "/" in rel else None
        if self.annotations is None:
            return _strip_suffix(rel)
        if top == self.annotations:
            return _strip_suffix(rel[len(top) + 1 :]) if is_xml else None
        if is_xml:
            return None
        if top in self.image_tops:
            return _strip_suffix(rel[len(top) + 1 :])
        return _strip_suffix(rel) if not self.image_tops else None

    def image_folders(self, xml: str) -> list[str]:
        """The folders the image of an annotation would be in."""
        folder = _folder(xml)
        if self.annotations is None:
            return [folder]
        inside = folder[len(self.annotations) + 1 :]
        return [f"{top}/{inside}".rstrip("/") for top in self.image_tops] or [inside or "."]

    def annotation_folder(self, image: str) -> str:
        """The folder the annotation of an image would be in."""
        folder = _folder(image)
        if self.annotations is None:
            return folder
        top = image.split("/", 1)[0] if "/" in image else None
        inside = folder[len(top) + 1 :] if top in self.image_tops else ("" if folder == "." else folder)
        return f"{self.annotations}/{inside}".rstrip("/")


def _layout(tree: _Tree) -> _Layout:
    """The layout, from folder names at the top (an unreadable `Annotations/` still makes the paired layout)."""
    tops = sorted(folder for folder in tree.folders if "/" not in folder)
    holds_xml = {rel.split("/", 1)[0] for rel in tree.files if "/" in rel and rel.lower().endswith(".xml")}
    annotations = None
    for name in ANNOTATION_DIRS:
        found = [top for top in tops if top.lower() == name and (name in NAMED_ANNOTATION_DIRS or top in holds_xml)]
        if found:
            annotations = found[0]
            break
    image_tops = sorted((t for t in tops if t.lower() in IMAGE_DIRS), key=lambda t: (IMAGE_DIRS.index(t.lower()), t))
    return _Layout(annotations, image_tops)


def discover_samples(raw_dir: Path, problems: Problems | None = None) -> list[SampleFiles]:
    """Pair the images and annotations under raw_dir (see the module docstring), sorted by path.

    Returns every image and every annotation exactly once: paired, alone (`image=None` or `annotation=None`)
    when it has no partner, or as a rival of the annotation its image is paired with. A lone file that may
    have a partner that could not be paired (a look-alike name, an unreadable folder) carries a `hint`. What
    cannot be read is added to `problems`.
    """
    raw_dir = Path(raw_dir)
    problems = [] if problems is None else problems
    tree = _walk(raw_dir, problems)
    layout = _layout(tree)
    xml_keys: dict[str, str] = {}  # annotation -> its key
    image_keys: dict[str, str] = {}
    for rel in tree.files:
        is_xml = rel.lower().endswith(".xml")
        key = layout.key(rel, is_xml)
        if key is not None and (is_xml or _is_image(raw_dir, rel, problems)):
            (xml_keys if is_xml else image_keys)[rel] = key

    pairs: dict[str, str | None] = {}  # annotation -> image (None: alone)
    used: dict[str, str] = {}  # image -> its annotation
    rivals: dict[str, list[str]] = defaultdict(list)  # image -> other annotations that claim it
    names: dict[str, str | None] = {}  # annotation -> its <filename>'s base name, read at most once
    hints: dict[str, str] = {}

    def named(xml: str) -> str | None:
        if xml not in names:
            filename = annotation_filename(raw_dir / xml)
            names[xml] = base_name(filename) if filename else None
        return names[xml]

    # By name: exact spellings first, then spellings that differ in Unicode form or letter case.
    for spelling in (str, fold):
        by_key: dict[str, list[str]] = defaultdict(list)
        for rel, key in image_keys.items():
            by_key[spelling(key)].append(rel)
        for xml, key in xml_keys.items():
            if xml in pairs:
                continue
            candidates = [c for c in by_key.get(spelling(key), []) if c not in used]
            if len(candidates) > 1:  # a.jpg and a.png beside a.xml: <filename> decides
                wanted = named(xml)
                candidates.sort(key=lambda c: not wanted or fold(_name(c)) != fold(wanted))
            if candidates:
                pairs[xml] = candidates[0]
                used[candidates[0]] = xml
    rival_xmls: set[str] = set()
    paired_by_key: dict[str, str] = {}
    for image in sorted(used, reverse=True):
        paired_by_key[fold(image_keys[image])] = image
    for xml, key in xml_keys.items():  # a second annotation with a paired image's name: which one is right?
        if xml not in pairs and fold(key) in paired_by_key:
            rivals[paired_by_key[fold(key)]].append(xml)
            rival_xmls.add(xml)

    # By <filename>: an annotation left over, to an image left over (in the flat layout, beside it). One whose
    # <filename> names an image paired by name is that image's rival.
    free_by_name: dict[str, list[str]] = defaultdict(list)
    for rel in image_keys:
        if rel not in used:
            free_by_name[fold(_name(rel))].append(rel)
    paired_by_name = {fold(_name(rel)): rel for rel in sorted(used, reverse=True)}
    leftovers = [xml for xml in xml_keys if xml not in pairs and xml not in rival_xmls]
    for xml in leftovers:
        wanted = named(xml) if image_keys else None
        candidates = [c for c in free_by_name.get(fold(wanted), []) if c not in used] if wanted else []
        if layout.annotations is None:
            candidates = [c for c in candidates if _folder(c) == _folder(xml)]
        if candidates:
            pairs[xml] = candidates[0]
            used[candidates[0]] = xml
        elif wanted and fold(wanted) in paired_by_name:
            rivals[paired_by_name[fold(wanted)]].append(xml)
            rival_xmls.add(xml)
        else:
            pairs[xml] = None

    # A lone annotation and a lone image that look alike, or a partner's folder that cannot be read.
    lone_images = {rel for rel in image_keys if rel not in used}
    by_loose: dict[str, list[str]] = defaultdict(list)
    for rel in sorted(lone_images):
        by_loose[_loose(rel)].append(rel)
        by_loose[fold(_name(rel))].append(rel)
    for xml in leftovers:
        if pairs.get(xml, "") is not None:
            continue
        wanted = names.get(xml)
        alike = by_loose.get(_loose(xml), []) + (by_loose.get(fold(wanted), []) if wanted else [])
        blocked = [b for folder in layout.image_folders(xml) if (b := tree.blocked(folder))]
        if alike:
            hints[xml] = f"{alike[0]} looks like its image, but their names do not pair: rename one to match the other"
            hints[alike[0]] = (
                f"{xml} looks like its annotation, but their names do not pair: rename one to match the other "
                "(until then this image cannot be a background: its objects would be taught as background)"
            )
        elif blocked:
            hints[xml] = f"the image folder {blocked[0]} cannot be read (path_unreadable): fix its permissions"
    for rel in lone_images:
        blocked_dir = tree.blocked(layout.annotation_folder(rel)) if layout.annotations else None
        if blocked_dir and rel not in hints:
            hints[rel] = (
                f"the annotation folder {blocked_dir} cannot be read (path_unreadable), so this image's "
                "annotation may be there: fix its permissions"
            )

    samples = [
        SampleFiles(image=image, annotation=xml, rivals=tuple(rivals.get(image or "", ())), hint=hints.get(xml))
        for xml, image in pairs.items()
    ]
    samples += [SampleFiles(image=rel, annotation=None, hint=hints.get(rel)) for rel in sorted(lone_images)]
    return sorted(samples, key=lambda s: (s.image or s.annotation or "", s.annotation or ""))


def sample_id(image_relpath: str) -> str:
    """The sample's id (its label file's name): the image path without extension and leading image folder.

    "JPEGImages/000001.jpg" -> "000001", "images/a/b.png" -> "a/b", "sub/a.png" -> "sub/a".
    """
    if not is_plain_relpath(image_relpath):
        image_relpath = str(PurePosixPath(image_relpath))
    head, slash, rest = image_relpath.partition("/")
    if slash and rest and head.lower() in IMAGE_DIRS:
        image_relpath = rest
    return _strip_suffix(image_relpath)
