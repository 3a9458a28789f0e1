"""A Pascal VOC folder <-> its samples (image + annotation pairs), annotations and ImageSets splits.

Layouts (folder names matched without regard to case), decided at the top of the dataset folder:

- paired: an `Annotations/` folder and image folders `JPEGImages/` and/or `images/` (when neither exists, the
  images are every image outside `Annotations/`); an annotation and an image pair up when their paths inside
  their folders agree without the extension (`Annotations/sub/a.xml` <-> `JPEGImages/sub/a.jpg`);
- flat: no `Annotations/` folder; each XML sits beside its image, at any depth (`sub/a.xml` <-> `sub/a.png`).

Pairs are made by stem first; an annotation left over is then matched by its `<filename>` to an image left
over (in the flat layout, in the same folder). Hidden files and folders, and `ImageSets/`, are skipped. An
image is a file with an image extension, or any other file whose first bytes are JPEG/PNG/BMP/WebP.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visapp.errors import DataError
from visapp.formats import SPLITS
from visapp.formats.images import has_image_suffix, sniff_format

ANNOTATION_DIRS = frozenset({"annotations"})
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


def _text(element: object | None) -> str:
    text = getattr(element, "text", None)
    return text.strip() if text else ""


def _children(parent: object | None) -> dict[str, object]:
    """Direct children by lower-cased tag, the first of each name (some tools write `<Xmin>`)."""
    found: dict[str, object] = {}
    for child in parent if parent is not None else ():  # type: ignore[attr-defined]
        if isinstance(child.tag, str):
            found.setdefault(child.tag.lower(), child)
    return found


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
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


def _object(element: object) -> VocObject:
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


def parse_annotation(data: bytes) -> Annotation:
    """Parse one VOC XML document with defusedxml.

    `<part>`, `<actions>`, `<point>` and other elements are ignored; only direct `<object>` children of
    `<annotation>` are objects (a `<part>` has its own `<name>` and `<bndbox>`).

    Raises:
        AnnotationError: `xml_unsafe` for a DTD, an entity declaration or an external reference;
            `xml_malformed` for XML that is not well-formed or whose root is not `<annotation>`.
    """
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise AnnotationError("xml_unsafe", _unsafe_reason(data)) from None
    except ParseError as exc:
        raise AnnotationError("xml_malformed", f"not well-formed XML ({exc})") from None
    except Exception as exc:  # e.g. an unknown encoding in the XML declaration
        raise AnnotationError("xml_malformed", f"cannot be parsed ({type(exc).__name__}: {exc})") from None
    if not isinstance(root.tag, str) or root.tag != "annotation":
        raise AnnotationError("xml_malformed", f"root element is <{root.tag}>, not <annotation>: not a VOC annotation")
    size = _children(_children(root).get("size"))
    return Annotation(
        filename=_text(_children(root).get("filename")) or None,
        width=_dimension(_text(size.get("width"))),
        height=_dimension(_text(size.get("height"))),
        objects=[_object(child) for child in root if child.tag == "object"],
    )


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


def _unreadable(exc: OSError, what: str) -> str:
    return f"{what} cannot be read ({exc.strerror or exc}): check its permissions, or remove a broken link"


def _entries(folder: Path, rel: str, problems: Problems) -> list[os.DirEntry[str]]:
    """A folder's entries, sorted; an unreadable folder is a problem (nothing in it can be checked)."""
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        problems.append((rel or ".", _unreadable(exc, "this folder")))
        return []


def _find_dir(parent: Path, rel: str, name: str, problems: Problems) -> tuple[Path, str] | None:
    """The child folder named `name` without regard to case (the exact name first), and its relative path."""
    children = [e for e in _entries(parent, rel, problems) if e.name.lower() == name.lower()]
    children.sort(key=lambda entry: entry.name != name)
    for entry in children:
        if entry.is_dir():
            return Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name
    return None


def read_image_sets(raw_dir: Path, problems: Problems | None = None) -> dict[str, set[str]]:
    """ImageSets/Main/{train,val,test}.txt -> {split: ids}; {} when there are none.

    One id per line (the first word, so VOC's `id  1` class lists work too); blank lines and `#` comments
    are skipped. A list or folder that cannot be read is added to `problems`: splits must never fall back to
    hashing without a word.
    """
    problems = [] if problems is None else problems
    sets_dir = _find_dir(Path(raw_dir), "", IMAGE_SETS_DIR[0], problems)
    main_dir = _find_dir(sets_dir[0], sets_dir[1], IMAGE_SETS_DIR[1], problems) if sets_dir else None
    if main_dir is None:
        return {}
    found: dict[str, set[str]] = {}
    files = {entry.name.lower(): entry for entry in _entries(main_dir[0], main_dir[1], problems)}
    for split in SPLITS:
        entry = files.get(f"{split}.txt")
        if entry is None:
            continue
        try:
            text = Path(entry.path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append((f"{main_dir[1]}/{entry.name}", _unreadable(exc, f"the {split} list")))
            continue
        ids = set()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                ids.add(line.split()[0])
        found[split] = ids
    return found


# ---------------------------------------------------------------- discovery


def _walk(raw_dir: Path, problems: Problems) -> list[str]:
    """Every visible file under raw_dir, as sorted relative POSIX paths; ImageSets/ at the top is skipped.

    Only regular files and symlinks (a dangling one is then reported as unreadable) are listed: reading a
    FIFO or a device named `x.jpg` would block. Folder symlinks are not followed (no loops). A folder or an
    entry that cannot be read is added to `problems`.
    """
    paths: list[str] = []
    stack = [("", raw_dir)]
    while stack:
        prefix, folder = stack.pop()
        for entry in _entries(folder, prefix.rstrip("/"), problems):
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if prefix or entry.name.lower() != IMAGE_SETS_DIR[0].lower():
                        stack.append((f"{rel}/", Path(entry.path)))
                elif entry.is_symlink() or entry.is_file(follow_symlinks=False):
                    paths.append(rel)
            except OSError as exc:
                problems.append((rel, _unreadable(exc, "this entry")))
    return sorted(paths)


def _is_image(raw_dir: Path, rel: str, problems: Problems) -> bool:
    """An image by its name, else by its first bytes; a file that cannot be opened to tell is a problem."""
    if has_image_suffix(rel) or rel.lower().endswith(".xml"):
        return has_image_suffix(rel)
    try:
        with (raw_dir / rel).open("rb") as handle:
            return sniff_format(handle.read(12)) is not None
    except OSError as exc:
        problems.append((rel, _unreadable(exc, "this file (it may be an image)")))
        return False


def _strip_suffix(rel: str) -> str:
    path = PurePosixPath(rel)
    return str(path.with_name(path.stem)) if path.suffix else rel


def _inside(rel: str, top: str) -> str:
    """rel without its first component `top`."""
    return rel[len(top) + 1 :]


def discover_samples(raw_dir: Path, problems: Problems | None = None) -> list[SampleFiles]:
    """Pair the images and annotations under raw_dir (see the module docstring), sorted by path.

    Returns every image and every annotation exactly once: paired, or alone (`image=None` or
    `annotation=None`) when it has no partner. What cannot be read is added to `problems`.
    """
    raw_dir = Path(raw_dir)
    problems = [] if problems is None else problems
    files = _walk(raw_dir, problems)
    tops = {rel.split("/", 1)[0] for rel in files if "/" in rel}
    ann_top = next((t for t in sorted(tops) if t.lower() in ANNOTATION_DIRS), None)
    image_tops = sorted((t for t in tops if t.lower() in IMAGE_DIRS), key=lambda t: (IMAGE_DIRS.index(t.lower()), t))

    xml_keys: dict[str, str] = {}  # annotation path -> matching key
    image_keys: dict[str, str] = {}
    for rel in files:
        top = rel.split("/", 1)[0] if "/" in rel else None
        is_xml = rel.lower().endswith(".xml")
        if ann_top is None:  # flat: key = folder + stem
            if is_xml:
                xml_keys[rel] = _strip_suffix(rel)
            elif _is_image(raw_dir, rel, problems):
                image_keys[rel] = _strip_suffix(rel)
        elif top == ann_top:
            if is_xml:
                xml_keys[rel] = _strip_suffix(_inside(rel, top))
        elif (top in image_tops or not image_tops) and _is_image(raw_dir, rel, problems):
            image_keys[rel] = _strip_suffix(_inside(rel, top) if top in image_tops else rel)

    by_key: dict[str, list[str]] = defaultdict(list)
    for rel, key in image_keys.items():
        by_key[key].append(rel)
    pairs: dict[str, str | None] = {}  # annotation -> image
    used: set[str] = set()
    leftovers: list[str] = []
    for xml, key in xml_keys.items():
        candidates = by_key.get(key, [])
        if not candidates:
            leftovers.append(xml)
            continue
        choice = candidates[0]
        if len(candidates) > 1:  # a.jpg and a.png beside a.xml: <filename> decides
            named = annotation_filename(raw_dir / xml)
            choice = next((c for c in candidates if named and PurePosixPath(c).name == named), choice)
        if choice in used:  # two annotations with one key (a.xml, a.XML): the second is matched by name
            leftovers.append(xml)
            continue
        pairs[xml] = choice
        used.add(choice)

    free_by_name: dict[str, list[str]] = defaultdict(list)
    for rel in image_keys:
        if rel not in used:
            free_by_name[PurePosixPath(rel).name].append(rel)
    for xml in leftovers if free_by_name else ():  # no image left over: nothing to match (and no re-read)
        named = annotation_filename(raw_dir / xml)
        choice = None
        if named:
            candidates = [c for c in free_by_name.get(PurePosixPath(named).name, []) if c not in used]
            if ann_top is None:  # flat: the image must sit beside its XML
                folder = PurePosixPath(xml).parent
                candidates = [c for c in candidates if PurePosixPath(c).parent == folder]
            choice = candidates[0] if candidates else None
        pairs[xml] = choice
        if choice:
            used.add(choice)

    pairs.update({xml: None for xml in leftovers if xml not in pairs})
    samples = [SampleFiles(image=image, annotation=xml) for xml, image in pairs.items()]
    samples += [SampleFiles(image=rel, annotation=None) for rel in image_keys if rel not in used]
    return sorted(samples, key=lambda s: (s.image or s.annotation or "", s.annotation or ""))


def sample_id(image_relpath: str) -> str:
    """The sample's id (its label file's name): the image path without extension and leading image folder.

    "JPEGImages/000001.jpg" -> "000001", "images/a/b.png" -> "a/b", "sub/a.png" -> "sub/a".
    """
    parts = PurePosixPath(image_relpath).parts
    if len(parts) > 1 and parts[0].lower() in IMAGE_DIRS:
        parts = parts[1:]
    path = PurePosixPath(*parts)
    return str(path.with_suffix("")) if path.suffix else str(path)
