"""Where a dataset comes from: a folder or an archive, vetted, and the VOC folder found inside it.

The dataset in a source is a folder with an `Annotations/` or `JPEGImages/` child (any case; `MyExport/`,
`VOCdevkit/VOC2007/` are found), one that holds both annotations and images first, then the shallowest; else the
innermost folder that wraps everything (flat layout: XML beside images). Files outside that folder are left out
(counted, and annotations or images among them named in the notes), and so is operating system litter
(`._*`, `.DS_Store`, `__MACOSX/`, `Thumbs.db`, ...: `visapp.ingest.archive.is_litter`) wherever it is, for
archives and folders alike. An archive is vetted whole first (`visapp.ingest.archive`): one bad entry refuses it.
A source without any XML or image that holds other archives (a ZIP in a ZIP) is refused as `nested_archive`,
with the commands that unpack it.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visapp.errors import VisError
from visapp.formats.image_formats import has_image_suffix
from visapp.formats.voc_layout import dataset_roots, layout_of
from visapp.fsio import os_error
from visapp.ingest.archive import (
    ArchiveLimits,
    ArchiveRefused,
    SafeArchive,
    check_collisions,
    is_litter,
    open_archive,
    safe_relpath,
)
from visapp.progress import Counter, ProgressCallback

MAX_LISTED = 10
# Archives that `visapp ingest` reads itself, and others that only an archiver unpacks (by name: a nested
# archive is never opened).
READABLE_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
OTHER_ARCHIVES = (".7z", ".rar", ".tar.zst", ".tzst")


def _is_data_file(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() == ".xml" or has_image_suffix(path)


@dataclass(frozen=True)
class RootChoice:
    """The folder of a source taken as the dataset ('' for the top), and what the choice passed over."""

    root: str
    notes: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """The folder as messages name it: `'MyExport/'`, or `the top folder`."""
        return repr(self.root + "/") if self.root else "the top folder"


def _held(paths: list[str], root: str) -> tuple[int, int, int]:
    """(samples paired, annotations, images) of the folder `root` as its own layout reads it
    (`voc_layout.layout_of`): annotations in its `Annotations/` (or beside their images, flat), images in its
    image folders, paired by name."""
    inside = [p[len(root) + 1 :] if root else p for p in under(paths, root)]
    layout = layout_of(inside)
    xml = {layout.key(p, True) for p in inside if p.lower().endswith(".xml")} - {None}
    images = {layout.key(p, False) for p in inside if has_image_suffix(p)} - {None}
    paired = len(xml & images)
    return paired, len(xml) if layout.annotations is not None else paired, len(images)


def _where(paths: list[str]) -> str:
    tops = Tally(p.rsplit("/", 1)[0] + "/" if "/" in p else "the top folder" for p in paths)
    shown = ", ".join(f"{folder!r} ({n})" if folder != "the top folder" else f"{folder} ({n})"
                      for folder, n in tops.most_common(3))  # fmt: skip
    return shown + (", ..." if len(tops) > 3 else "")


def choose_voc_root(paths: list[str], origin: str) -> RootChoice:
    """Relative file paths of a source -> the folder that holds the VOC dataset, with notes on what it leaves out.

    The candidates are the folders with an `Annotations/` or `JPEGImages/` child (`voc_layout.dataset_roots`), else
    the innermost folder that wraps everything (a flat layout). A candidate whose layout pairs annotations with
    images is preferred, then one with annotations, then the shallowest. The notes say when annotations or images
    lie outside the folder taken.

    Raises:
        VisError: no XML and no image anywhere, or several datasets side by side (at one depth, alike).
    """
    candidates = dataset_roots(paths) or {_common_folder(paths)}
    held = {root: _held(paths, root) for root in candidates}

    def kind(root: str) -> tuple[bool, bool]:
        paired, annotations, _ = held[root]
        return (paired > 0, annotations > 0)

    best = max(kind(root) for root in candidates)
    fitting = [root for root in candidates if kind(root) == best]
    depth = min(_depth(root) for root in fitting)
    shallowest = sorted(root for root in fitting if _depth(root) == depth)
    if len(shallowest) > 1:
        raise VisError(
            f"{origin} holds several VOC datasets ({', '.join(repr(c) for c in shallowest[:MAX_LISTED])}); "
            "ingest them one at a time (unzip, then `visapp ingest FOLDER --mode append`)"
        )
    root = shallowest[0]
    if not any(_is_data_file(p) for p in under(paths, root)):
        raise VisError(
            f"no VOC dataset in {origin}: found no .xml annotation and no image (JPEG, PNG, BMP, WebP); "
            "expected Annotations/ + JPEGImages/, annotations/ + images/, or each XML beside its image"
        )
    choice = RootChoice(root)
    inside = set(under(paths, root))
    outside_xml = [p for p in paths if p not in inside and p.lower().endswith(".xml")]
    outside_images = [p for p in paths if p not in inside and has_image_suffix(p)]
    _, xml, images = held[root]
    if outside_images:
        lack = " and no image" if not images else ""
        choice.notes.append(
            f"the folder taken, {choice.shown}, holds {xml} annotation(s){lack}; {len(outside_images)} image(s) "
            f"outside it were left out: {_where(outside_images)}. Put the images beside the annotations "
            "(Annotations/ and JPEGImages/ in one folder) if they belong to this dataset"
        )
    if outside_xml:
        more = " (more than the folder taken holds)" if len(outside_xml) > xml else ""
        choice.notes.append(
            f"{len(outside_xml)} annotation(s) outside the folder taken, {choice.shown}, were left out{more}: "
            f"{_where(outside_xml)}"
        )
    return choice


def find_voc_root(paths: list[str], origin: str) -> str:
    """The folder that holds the VOC dataset (`choose_voc_root`)."""
    return choose_voc_root(paths, origin).root


def _is_archive(path: str) -> bool:
    return path.casefold().endswith(READABLE_ARCHIVES + OTHER_ARCHIVES)


def _depth(folder: str) -> int:
    return 0 if not folder else folder.count("/") + 1


def under(paths: list[str], root: str) -> list[str]:
    """The paths inside the folder `root` ('' for the top)."""
    return list(paths) if not root else [p for p in paths if p.startswith(root + "/")]


def _common_folder(paths: list[str]) -> str:
    """The deepest folder holding every path (a ZIP's 'MyExport/' wrapper), '' when files sit at the top."""
    split = [p.split("/")[:-1] for p in paths]
    if not split:
        return ""
    common: list[str] = []
    for level in zip(*split, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


class Source:
    """An archive (ZIP or tar) or a folder, vetted: `files` are safe relative paths; `extract` writes them out."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.path = path
        self.origin = str(path)
        self.archive: SafeArchive | None = None
        self.sizes: dict[str, int] = {}
        self.on_disk: dict[str, str] = {}  # folder sources: safe path -> the name as it is on disk
        self.litter: list[str] = []  # files left out as operating system litter (`is_litter`), never read
        if path.is_dir():
            self._scan_folder()
        elif path.is_file():
            self.archive = open_archive(path, limits).__enter__()
            self.sizes = {e.path: e.size for e in self.archive.entries if not e.is_dir}
            self.litter = list(self.archive.litter)
        else:
            raise VisError(f"{path}: no such file or folder; give an archive (.zip, .tar, .tar.gz) or a VOC folder")
        self.files = sorted(self.sizes)

    def close(self) -> None:
        """Close the archive, if the source is one."""
        if self.archive is not None:
            self.archive.close()

    def _scan_folder(self) -> None:
        entries: list[tuple[str, bool, str]] = []
        for folder, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in sorted(dirs + names):
                full = Path(folder) / name
                rel = full.relative_to(self.path).as_posix()
                if is_litter(rel):  # left out unread, whatever it is (a link, an odd name); a folder's files counted
                    if name not in dirs:
                        self.litter.append(rel)
                    continue
                if full.is_symlink():
                    raise ArchiveRefused(
                        "symlink", f"{self.origin}: {rel!r} is a symbolic link; copy the file itself in (cp -L)"
                    )
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise ArchiveRefused(
                        "legacy_encoding",
                        f"{self.origin}: {rel.encode('utf-8', 'replace').decode()!r} has a name that is not valid "
                        "UTF-8; rename it",
                    ) from None
                try:
                    path = safe_relpath(rel)
                except ArchiveRefused as exc:
                    raise ArchiveRefused(exc.code, f"{self.origin}: {exc}") from None
                if name in dirs:
                    continue
                if is_litter(path):  # litter once normalised (e.g. `a\\._b.jpg`, a backslash in a Linux name)
                    self.litter.append(rel)
                    continue
                entries.append((path, False, rel))
                self.sizes[path] = full.stat().st_size
                self.on_disk[path] = rel
        check_collisions(entries, self.origin)

    def find_root(self) -> str:
        """The folder that holds the dataset (`choose_root`)."""
        return self.choose_root().root

    def choose_root(self) -> RootChoice:
        """The folder that holds the dataset, and what the choice left out (`choose_voc_root`).

        Raises:
            ArchiveRefused: `nested_archive`: no XML and no image, but other archives (a ZIP in a ZIP).
            VisError: no dataset, or several side by side (`find_voc_root`).
        """
        if not any(_is_data_file(p) for p in self.files):
            nested = [p for p in self.files if _is_archive(p)]
            if nested:
                raise ArchiveRefused("nested_archive", self._nested_message(nested))
        return choose_voc_root(self.files, self.origin)

    def _nested_message(self, nested: list[str]) -> str:
        """What to do with a source that holds archives instead of a dataset: unpack, then ingest each."""
        what, other = ("archive", "another") if self.archive is not None else ("folder", "an")
        if len(nested) == 1:
            held = f"{'only ' if len(self.files) == 1 else ''}{other} archive, {nested[0]!r},"
        else:
            listed = ", ".join(repr(p) for p in nested[:MAX_LISTED]) + (", ..." if len(nested) > MAX_LISTED else "")
            held = f"{len(nested)} archives ({listed})"
        head = f"{self.origin}: the {what} holds {held} and no dataset (no .xml annotation, no image)"
        if self.archive is not None:
            command = "unzip" if self.archive.kind == "ZIP" else "tar -xf"
            inner = [shlex.quote(p) for p in nested]
            unpack = f"`{command} {shlex.quote(str(self.path))}`, then "
        else:
            inner = [shlex.quote(str(self.path / self.on_disk[p])) for p in nested]
            unpack = ""
        if not all(p.casefold().endswith(READABLE_ARCHIVES) for p in nested):  # .7z, .rar: read by an archiver only
            return (
                f"{head}: unpack it and then the inner archive ({unpack}unpack {inner[0]} with its archiver, "
                "e.g. 7-Zip), then ingest the folder that holds the dataset"
            )
        if len(nested) == 1:
            fix = "ingest the archive itself" if self.archive is None else "unpack it and ingest the inner archive"
            return f"{head}: {fix} ({unpack}`visapp ingest {inner[0]}`)"
        return (
            f"{head}: {'unpack it and ' if self.archive is not None else ''}ingest them one at a time "
            f"({unpack}`visapp ingest {inner[0]}`, then `visapp ingest ARCHIVE --mode append` for each other one)"
        )

    def extract(self, dest: Path, root: str, progress: ProgressCallback | None = None) -> None:
        """Write the files under `root` into the new folder `dest`, `root` stripped."""
        if self.archive is not None:
            self.archive.extract(dest, prefix=root, progress=progress)
            return
        try:
            dest.mkdir()
        except OSError as exc:
            raise os_error(exc, dest, "create") from None
        wanted = under(self.files, root)
        counter = Counter(progress, "ingest", len(wanted), "files")
        for rel in wanted:
            target = dest / rel[len(root) + 1 :] if root else dest / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / self.on_disk[rel], target)  # sendfile: streams, whatever the size
            except OSError as exc:
                raise os_error(exc, exc.filename or target, "copy") from None
            counter.advance()
