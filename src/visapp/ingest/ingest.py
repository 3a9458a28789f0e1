"""A VOC dataset as a ZIP or a folder -> `data/raw`, swapped in whole and recorded by DVC in `data/raw.dvc`.

1. Vet the source and find the dataset in it (`visapp.ingest.sources`).
2. Prepare the new version in `data/.raw.ingest-XXXX/` (beside `data/raw`, so that the swap is a rename):
   the files extracted or copied, or for `--mode append` the current version hard-linked with the new files
   merged in (`visapp.ingest.merge`).
3. Hash it into the DVC cache (in-process, with git switched off), which gives the exact `raw.dvc` that
   `dvc add data/raw` would write, before `data/raw` is touched. Why not `dvc add data/raw` after the swap:
   it hashes for minutes while `data/raw` is new and `raw.dvc` old, and DVC writes `raw.dvc` in place.
4. Swap it in under a journal (`visapp.ingest.swap`): a kill at any moment leaves the old or the new version.

Operating system litter (`._*` AppleDouble files, `.DS_Store`, `__MACOSX/`, `Thumbs.db`, ...) is left out of
the new version wherever it is in the source, so it never changes the dataset's hash; the result counts it.

Also refused, with the fix in the message: a source with no XML and no image (one that holds only another
archive, a ZIP in a ZIP, says to unpack it and ingest the inner archive), a replace that would drop a
`data/raw` that DVC does not hold (untracked, or changed since the last `dvc add`; `force` to discard), a
second ingest running at the same time, too little free space, and every archive refusal.

`name` names the new dataset version: it is written as the output's `desc` in `data/raw.dvc` (DVC's own
field for a description, kept by later `dvc add` runs). A version ingested without a name has none (an
appended version is a new version: the old name is not carried over).
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from visapp.errors import DataError, VisError
from visapp.formats.dvcfile import DvcOut, dvc_file_for, parse_dvc_file, read_dvc_out
from visapp.formats.voc import parse_annotation
from visapp.formats.voc_layout import discover_samples
from visapp.fsio import atomic_path, os_error
from visapp.ingest import swap
from visapp.ingest.archive import ArchiveLimits, litter_kind, shown_path
from visapp.ingest.merge import link_tree, merge
from visapp.ingest.sources import Source, under
from visapp.integrations import dvc
from visapp.progress import ProgressCallback

log = logging.getLogger(__name__)

Mode = Literal["replace", "append"]
MODES: tuple[Mode, ...] = ("replace", "append")


@dataclass
class Survey:
    """What a dataset folder holds, as validation will pair it: images, annotations, objects per class name."""

    images: int = 0
    annotations: int = 0
    objects: Counter[str] = field(default_factory=Counter)


def survey(raw_dir: Path) -> Survey:
    """Count a dataset's samples and objects (an annotation that does not parse counts no object: validate says why)."""
    found = Survey()
    for sample in discover_samples(raw_dir):
        found.images += sample.image is not None
        if sample.annotation is not None:
            found.annotations += 1
            try:
                found.objects.update(
                    obj.name for obj in parse_annotation((raw_dir / sample.annotation).read_bytes()).objects
                )
            except (OSError, DataError):
                continue
    return found


def class_names(raw_dir: Path) -> list[str]:
    """Every object name a dataset's annotations hold, sorted: its classes when nobody named them (an upload, or
    `visapp check` outside a project, without classes)."""
    return sorted(survey(raw_dir).objects)


def describe_classes(objects: Counter[str], classes: list[str] | None) -> list[str]:
    """Lines comparing the class names found with data.classes (when known)."""
    found = ", ".join(f"{name} {count}" for name, count in sorted(objects.items())) or "none"
    lines = [f"objects per class name: {found}"]
    if classes:
        unknown = sorted(set(objects) - set(classes))
        absent = [name for name in classes if name not in objects]
        if unknown:
            lines.append(
                f"not in data.classes: {', '.join(unknown)} (validate rejects their samples): add them to "
                "data.classes in conf/data/ and run `make params`, or fix the annotations"
            )
        if absent:
            lines.append(f"in data.classes but without any object here: {', '.join(absent)}")
    return lines


@dataclass
class IngestResult:
    """The new dataset version (or the unchanged one): what `visapp ingest` prints."""

    raw_dir: str
    md5: str
    nfiles: int
    size: int
    images: int
    annotations: int
    mode: str
    name: str | None = None
    added: int = 0
    unchanged: int = 0
    ignored: list[str] = field(default_factory=list)  # files outside the dataset folder, left out
    litter: list[str] = field(default_factory=list)  # operating system files (`._*`, `.DS_Store`, ...), left out
    notes: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # lines: the class names found, against data.classes
    same_version: bool = False  # the source held exactly the current version: nothing was swapped
    folder: str = "the top folder"  # the source's folder taken as the dataset ("'MyExport/'", "the top folder")

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        what = "unchanged: it already holds this version" if self.same_version else "new dataset version"
        lines = [
            f"{self.raw_dir}: {what} {self.md5}{label}",
            f"  dataset folder of the source: {self.folder}",
            f"  {self.images} images, {self.annotations} annotations, {self.nfiles} files, {_size(self.size)}",
            *(f"  {line}" for line in self.classes),
        ]
        if self.mode == "append":
            lines.append(f"  appended {self.added} new files ({self.unchanged} already present with the same bytes)")
        if self.ignored:
            shown = ", ".join(self.ignored[:3]) + (", ..." if len(self.ignored) > 3 else "")
            lines.append(f"  left out {len(self.ignored)} files outside the dataset folder: {shown}")
        if self.litter:
            kinds = ", ".join(kind for kind, _ in Counter(litter_kind(p) or "other" for p in self.litter).most_common())
            shown = ", ".join(shown_path(p) for p in self.litter[:3]) + (", ..." if len(self.litter) > 3 else "")
            files = "file" if len(self.litter) == 1 else "files"
            lines.append(f"  left out {len(self.litter)} operating-system {files} ({kinds}): {shown}")
        lines += [f"  note: {note}" for note in self.notes]
        if not self.same_version:
            lines.append(f"  recorded in {self.raw_dir}.dvc; next: git commit it, and `dvc push` to share the data")
        return "\n".join(lines)


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _check_free_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise VisError(
            f"not enough free space in {folder}: the dataset needs {_size(needed)}, {_size(free)} are free "
            "(and DVC's cache needs about as much again unless it uses links); free some space and retry"
        )


def _refuse_overlap(source: Path, raw: Path) -> None:
    src = source.resolve()
    if src == raw.resolve() or src.is_relative_to(raw.resolve()):
        raise VisError(f"{source} is inside {raw}: ingest from a folder outside the dataset")
    if src.is_dir() and raw.resolve().is_relative_to(src):
        raise VisError(f"{source} contains {raw}: give the folder that holds only the new dataset")


@dataclass(frozen=True)
class _Request:
    """What the user asked for, beside the source."""

    mode: Mode
    name: str | None
    force: bool
    classes: list[str] | None


@dataclass(frozen=True)
class _Target:
    """Where the new version goes: the dataset folder, its repository, and its name for messages."""

    raw: Path
    repo_root: Path

    @property
    def label(self) -> str:
        raw, root = self.raw, self.repo_root
        return raw.relative_to(root).as_posix() if raw.is_relative_to(root) else str(raw)


def recover(raw_dir: str | Path, repo_root: Path | None = None) -> str | None:
    """Finish or undo an interrupted ingest; a line saying what was done, or None when there was nothing to do.

    Raises:
        VisError: another ingest is running, or the journal cannot be applied (the message says what to move).
    """
    raw = Path(raw_dir).absolute()
    repo_root = repo_root or dvc.find_dvc_root(next(p for p in raw.parents if p.exists()))
    with swap.ingest_lock(repo_root):
        return swap.recover(raw, repo_root)


def ingest(
    source: str | Path,
    raw_dir: str | Path,
    *,
    mode: Mode = "replace",
    name: str | None = None,
    limits: ArchiveLimits | None = None,
    force: bool = False,
    classes: list[str] | None = None,
    progress: ProgressCallback | None = None,
    phase: swap.Phase | None = None,
) -> IngestResult:
    """Put the VOC dataset in `source` (a .zip or a folder) into `raw_dir` and record it with DVC.

    Args:
        source: a ZIP archive or a folder holding a VOC dataset, possibly under wrapper folders.
        raw_dir: the dataset folder of the pipeline (params.yaml's `paths.raw`), inside a DVC repository.
        mode: "replace" the current dataset, or "append" the new samples to it.
        name: a name for the new version, recorded as `desc` in `<raw_dir>.dvc`.
        limits: archive safety limits (`visapp.ingest.archive.ArchiveLimits`).
        force: replace even a `raw_dir` whose content DVC does not hold (it is lost), or a dataset that has
            annotations with one that has none.
        classes: data.classes, to compare with the class names found (None: not compared).
        progress: told after each file extracted or copied (task "ingest").
        phase: told each step's name as it is passed ("prepared", "hashed", then those of `swap.commit`).

    Raises:
        VisError: anything the user can fix; `raw_dir` and its .dvc file are then as they were.
    """
    if mode not in MODES:
        raise VisError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    source = Path(source)
    raw = Path(raw_dir).absolute()
    target = _Target(raw, dvc.find_dvc_root(next(p for p in raw.parents if p.exists())))
    _refuse_overlap(source.absolute(), raw)
    try:
        raw.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, raw.parent, "create") from None
    try:
        with swap.ingest_lock(target.repo_root):
            note = swap.recover(raw, target.repo_root)
            if note:
                log.info("%s", note)
            src = Source(source, limits or ArchiveLimits())
            try:
                return _ingest_source(src, target, _Request(mode, name, force, classes), progress, phase)
            finally:
                src.close()
    except OSError as exc:  # the specific places say more; this keeps any other one a message, not a traceback
        raise os_error(exc, exc.filename or raw.parent, "write") from None


def _ingest_source(
    src: Source, target: _Target, request: _Request, progress: ProgressCallback | None, phase: swap.Phase | None
) -> IngestResult:
    """Under the lock: find the dataset, check the replace is safe, prepare, hash, swap."""
    phase = phase or (lambda step: None)
    choice = src.choose_root()
    root = choice.root
    wanted = under(src.files, root)
    kept = set(wanted)
    ignored = [p for p in src.files if p not in kept]
    _check_free_space(target.raw.parent, sum(src.sizes[p] for p in wanted))
    current = read_dvc_out(target.raw) if target.raw.exists() else None
    with dvc.open_repo(target.repo_root, scm=False) as repo:
        if request.mode == "replace" and target.raw.exists() and not request.force:
            problem = dvc.unrecorded_changes(repo, target.raw, target.label)
            if problem:
                raise VisError(
                    f"{problem}: replacing it would lose that data; record it first (`dvc add {target.label}` "
                    "and commit), or pass --force to discard it"
                )
        staging = swap.preparation_folder(target.raw)
        staged = staging / target.raw.name
        committed = False
        try:
            where = f" ({root}/)" if root else ""
            log.info("preparing %s%s in %s", src.origin, where, staging.relative_to(target.repo_root))
            unchanged = 0
            if request.mode == "append" and target.raw.is_dir():
                link_tree(target.raw, staged)
                src.extract(staging / "incoming", root, progress)
                added, unchanged = merge(staging / "incoming", staged, src.origin, root, target.label)
            else:
                src.extract(staged, root, progress)
                added = len(wanted)
            found = survey(staged)
            _refuse_losing_annotations(found, target, request)
            phase("prepared")
            log.info("hashing %d images and %d annotations into the DVC cache", found.images, found.annotations)
            new_dvc = dvc.add_folder(repo, staged, request.name)
            new = parse_dvc_file(new_dvc, f"{target.label}.dvc", target.raw.name)
            phase("hashed")
            same = current is not None and current.md5 == new.md5
            if same and current is not None:
                notes = _rename_version(target, current, request.name, new_dvc)
            else:
                notes = swap.commit(target.raw, staging, target.repo_root, new_dvc, dvc.autostage(repo), phase)
                committed = True
        finally:
            if not committed:
                swap.remove_tree(staging)
    for note in notes:
        log.warning("%s", note)
    return IngestResult(
        folder=choice.shown,
        raw_dir=target.label,
        md5=new.md5.removesuffix(".dir"),
        nfiles=new.nfiles,
        size=new.size,
        images=found.images,
        annotations=found.annotations,
        mode=request.mode,
        name=(request.name or current.desc) if same and current else request.name,
        added=0 if same else added,
        unchanged=unchanged,
        ignored=ignored,
        litter=sorted(src.litter),
        notes=[*choice.notes, *notes],
        classes=describe_classes(found.objects, request.classes),
        same_version=same,
    )


def _refuse_losing_annotations(found: Survey, target: _Target, request: _Request) -> None:
    """A version without annotations replacing one with them is most likely the wrong folder: refuse, unless forced."""
    if request.force or request.mode != "replace" or found.annotations or not target.raw.is_dir():
        return
    before = survey(target.raw)
    if before.annotations:
        raise VisError(
            f"the new version has {found.images} images and no annotation, where {target.label} has "
            f"{before.annotations} annotations: was the image folder (JPEGImages/) given instead of the dataset "
            "folder that holds Annotations/ and JPEGImages/? Give that folder, or --force to replace it anyway"
        )


def _rename_version(target: _Target, current: DvcOut, name: str | None, new_dvc: str) -> list[str]:
    """The source held the current version: keep it; only a new name is written (DVC's `desc`)."""
    if name is None or name == current.desc:
        return []
    with atomic_path(dvc_file_for(target.raw)) as tmp:
        tmp.write_text(new_dvc, encoding="utf-8", newline="\n")
    return [f"the version is unchanged; its name is now {name!r} (it was {current.desc!r})"]
