"""A Pascal VOC folder -> its samples: which layout it has, and which image each annotation pairs with.

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

import contextlib
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visapp.formats.image_formats import has_image_suffix, sniff_format
from visapp.formats.report import has_odd_bytes
from visapp.formats.voc import annotation_filename, base_name
from visapp.formats.voc_ids import IMAGE_DIRS, strip_suffix
from visapp.fsio import is_plain_relpath, unreadable

# Annotation folders, in order of preference; the last ones count only when they hold XML (`labels/` may hold
# YOLO text files).
ANNOTATION_DIRS = ("annotations", "annotation", "labels", "xml", "xmls")
NAMED_ANNOTATION_DIRS = frozenset({"annotations", "annotation"})
IMAGE_SETS_DIR = ("ImageSets", "Main")  # the split lists: ImageSets/Main/{train,val,test}.txt


@dataclass(frozen=True)
class SampleFiles:
    """One sample: paths relative to the dataset folder (POSIX), either may be missing."""

    image: str | None
    annotation: str | None
    rivals: tuple[str, ...] = ()  # other annotations with this image's name: which one is right is unknown
    hint: str | None = None  # for a lone file: why a partner it may have was not paired


Problems = list[tuple[str, str]]  # (path relative to the dataset folder, what is wrong and what to do)


def folder_entries(folder: Path, rel: str, problems: Problems) -> list[os.DirEntry[str]]:
    """A folder's entries, sorted; an unreadable folder is a problem (nothing in it can be checked)."""
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        problems.append((rel or ".", unreadable(exc, folder, "this folder")))
        return []


def find_child_folder(parent: Path, rel: str, name: str, problems: Problems) -> tuple[Path, str] | None:
    """The child folder named `name` without regard to case (the exact name first), and its relative path."""
    children = [e for e in folder_entries(parent, rel, problems) if e.name.lower() == name.lower()]
    children.sort(key=lambda entry: entry.name != name)
    for entry in children:
        if entry.is_dir():
            return Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name
    return None


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
        entries = folder_entries(folder, prefix.rstrip("/"), problems)
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


def fold(name: str) -> str:
    """The form in which two spellings of a name are the same: Unicode NFC (macOS writes NFD), case folded."""
    return unicodedata.normalize("NFC", name).casefold()


_COPY_MARK = re.compile(r"(?:\s*\(\d+\)|[\s_-]*(?:-\s*)?copy(?:\s*\d+)?)$", re.IGNORECASE)


# Code pages a Windows archive's names come in (`unzip` leaves their bytes): a name that is not UTF-8 is read in
# each, so `Se\xf1al.xml` (Windows-1252) or `Se\xa4al.xml` (DOS) still looks like `Señal.jpg`.
_CODE_PAGES = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "cp437", "cp850", "cp852", "cp866",
    "shift_jis", "gbk", "big5", "euc_kr",
)  # fmt: skip


def _loose(stem: str) -> str:
    """A name reduced to what a person would call "the same name": without a copy mark, its letters and digits
    (`IMG_0001 (1)`, `img-0001 - Copy` -> `img0001`), else its other visible characters (`🙂 (1)` -> `🙂`);
    "" when it has none."""
    bare = unicodedata.normalize("NFKC", _COPY_MARK.sub("", stem)).casefold()
    kept = "".join(ch for ch in bare if ch.isalnum())
    return kept or "".join(ch for ch in bare if unicodedata.category(ch)[0] not in "PZC")


def _loose_keys(rel: str) -> set[str]:
    """The look-alike keys of a file's stem (`_loose`): one, or one per code page its bytes may be in when its
    name is not UTF-8. A name with none looks like nothing."""
    stem = _name(strip_suffix(rel))
    spellings = [stem]
    if has_odd_bytes(stem):
        raw = stem.encode("utf-8", "surrogateescape")
        spellings = []
        for codec in _CODE_PAGES:
            with contextlib.suppress(UnicodeDecodeError):
                spellings.append(raw.decode(codec))
    return {key for spelling in spellings if (key := _loose(spelling))}


@dataclass
class Layout:
    """Where annotations and images live: `annotations` is None for the flat layout."""

    annotations: str | None
    image_tops: list[str]

    def key(self, rel: str, is_xml: bool) -> str | None:
        """The name an annotation and its image share (folder and stem inside their folders); None: not a
        candidate (an XML outside the annotation folder, a file under it that is not XML)."""
        top = rel.split("/", 1)[0] if "/" in rel else None
        if self.annotations is None:
            return strip_suffix(rel)
        if top == self.annotations:
            return strip_suffix(rel[len(top) + 1 :]) if is_xml else None
        if is_xml:
            return None
        if top in self.image_tops:
            return strip_suffix(rel[len(top) + 1 :])
        return strip_suffix(rel) if not self.image_tops else None

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


def layout_of(files: Iterable[str], folders: Iterable[str] = ()) -> Layout:
    """The layout of a dataset folder, from the relative POSIX paths of its files, and of its folders (which
    count even when empty or unreadable: an unreadable `Annotations/` still makes the paired layout).

    The one place that decides it: discovery (`discover_samples`, for validation and the dataset diff) and
    ingest's append (`visapp.ingest.merge`) ask here.
    """
    files = list(files)
    tops = {folder for folder in folders if "/" not in folder} | {rel.split("/", 1)[0] for rel in files if "/" in rel}
    holds_xml = {rel.split("/", 1)[0] for rel in files if "/" in rel and rel.lower().endswith(".xml")}
    annotations = None
    for name in ANNOTATION_DIRS:
        found = [
            top for top in sorted(tops) if top.lower() == name and (name in NAMED_ANNOTATION_DIRS or top in holds_xml)
        ]
        if found:
            annotations = found[0]
            break
    image_tops = sorted((t for t in tops if t.lower() in IMAGE_DIRS), key=lambda t: (IMAGE_DIRS.index(t.lower()), t))
    return Layout(annotations, image_tops)


# A child folder of these names shows that its parent is a VOC dataset (`images/` or `labels/` alone does not:
# many unrelated folders hold one).
_DATASET_MARKERS = frozenset({*NAMED_ANNOTATION_DIRS, IMAGE_DIRS[0]})


def dataset_roots(paths: Iterable[str]) -> set[str]:
    """The folders ('' for the top) that a VOC dataset's folders show to be one, from the relative POSIX paths of
    the files under them: a folder with an `Annotations/` (`Annotation/`) or `JPEGImages/` child, any case."""
    roots = set()
    for path in paths:
        parts = path.split("/")
        for depth, part in enumerate(parts[:-1]):
            if part.casefold() in _DATASET_MARKERS:
                roots.add("/".join(parts[:depth]))
                break
    return roots


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
    layout = layout_of(tree.files, tree.folders)
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
    paired_by_name = {fold(_name(rel)): rel for rel in sorted(used, reverse=True)}  # also those paired below
    leftovers = [xml for xml in xml_keys if xml not in pairs and xml not in rival_xmls]
    for xml in leftovers:
        wanted = named(xml) if image_keys else None
        if not wanted:
            pairs[xml] = None
            continue
        candidates = [c for c in free_by_name.get(fold(wanted), []) if c not in used]
        if layout.annotations is None:
            candidates = [c for c in candidates if _folder(c) == _folder(xml)]
        if candidates:
            pairs[xml] = candidates[0]
            used[candidates[0]] = xml
            paired_by_name.setdefault(fold(wanted), candidates[0])  # a later <filename> naming it is a rival
        elif fold(wanted) in paired_by_name:
            rivals[paired_by_name[fold(wanted)]].append(xml)
            rival_xmls.add(xml)
        else:
            pairs[xml] = None

    # A lone annotation and a lone image that look alike, or a partner's folder that cannot be read.
    lone_images = {rel for rel in image_keys if rel not in used}
    by_loose: dict[str, list[str]] = defaultdict(list)  # look-alike key -> lone images
    by_named: dict[str, list[str]] = defaultdict(list)  # folded file name -> lone images (what <filename> names)
    for rel in sorted(lone_images):
        for key in _loose_keys(rel):
            by_loose[key].append(rel)
        by_named[fold(_name(rel))].append(rel)
    for xml in leftovers:
        if pairs.get(xml, "") is not None:
            continue
        wanted = names.get(xml)
        found = [image for key in sorted(_loose_keys(xml)) for image in by_loose.get(key, [])]
        alike = list(dict.fromkeys(found + (by_named.get(fold(wanted), []) if wanted else [])))
        blocked = [b for folder in layout.image_folders(xml) if (b := tree.blocked(folder))]
        if alike:
            which = f"{alike[0]} looks" if len(alike) == 1 else f"{', '.join(alike[:-1])} and {alike[-1]} look"
            hints[xml] = f"{which} like its image, but their names do not pair: rename one to match the other"
            for image in alike:  # every one: any of them may hold this annotation's objects
                hints[image] = (
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
