"""A VOC dataset as a ZIP or a folder -> `data/raw`, swapped in whole and recorded by DVC in `data/raw.dvc`.

`ingest(source, raw_dir, mode, name)`:

1. Find the dataset in SOURCE: the shallowest folder with an `Annotations/` or `JPEGImages/` child (any
   case; `MyExport/`, `VOCdevkit/VOC2007/` are found), else the innermost folder that wraps everything
   (flat layout: XML beside images). Files outside that folder are left out (and counted). A ZIP is vetted
   whole first (`visapp.zipsafe`): one bad entry refuses the archive.
2. Stage: extract or copy it into `data/.raw.ingest-XXXX/` (a sibling of `data/raw`, so that the swap is a
   rename on one file system). `--mode append` first hard-links the current `data/raw` into the staging
   folder (no copy, no risk: nothing is ever written into a file in place), then adds the new files: a
   name that already exists must hold the same bytes (else the ingest is refused and the clashes named);
   `ImageSets/Main/*.txt` lists are merged line by line; the incoming folders take the current spelling
   (`images/` goes into `JPEGImages/` when that is what `data/raw` uses).
3. Hash: DVC adds the staged folder to its cache (in-process, with git switched off so that nothing is
   staged or ignored for the temporary path), which gives the exact `raw.dvc` that `dvc add data/raw`
   would write, before `data/raw` is touched.
4. Commit, under a journal (`.dvc/tmp/visapp-ingest.json`, written atomically, holding the new `raw.dvc`):
   rename `data/raw` -> `data/.raw.old-XXXX`, rename the staged folder -> `data/raw`, then replace
   `data/raw.dvc` atomically (write, fsync, rename): that last rename is the commit point. Then the
   journal, the old copy and the staging folder are removed, `/raw` is put in `data/.gitignore`, and the
   two files are `git add`ed when DVC's `core.autostage` is on (all as `dvc add data/raw` does).

Why not run `dvc add data/raw` after the swap: it hashes for seconds to minutes while `data/raw` is new and
`data/raw.dvc` old, and DVC writes `raw.dvc` in place (open "w"), so a kill there could leave it
truncated. Here a kill at any moment leaves `data/raw` + `data/raw.dvc` as they were (before the first
rename) or as the complete new version (after the commit point). Two renames cannot be one atomic step,
so between the first rename and the commit point (three system calls, microseconds) a kill leaves them
mixed; the journal exists then, and every `visapp ingest` (and `visapp ingest --recover`) starts by
finishing or undoing what a journal describes: before the commit point it renames the old folder back,
after it it only cleans up. Leftover staging folders without a journal are removed. Only one ingest runs
at a time (a lock beside the journal).

Also refused, with the fix in the message: a source with no XML and no image, a replace that would drop a
`data/raw` that DVC does not hold (untracked, or changed since the last `dvc add`; `--force` to discard),
a second ingest running at the same time, too little free space, and every `visapp.zipsafe` refusal.

`--name NAME` names the new dataset version: it is written as the output's `desc` in `data/raw.dvc` (DVC's
own field for a description, kept by later `dvc add` runs) and printed with the version. A version ingested
without a name has none (an appended version is a new version: the old name is not carried over).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from visapp.errors import VisError
from visapp.zipsafe import (
    SafeZip,
    ZipLimits,
    ZipRefused,
    check_collisions,
    is_litter,
    os_error,
    safe_relpath,
)

MODES = ("replace", "append")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp"})
ROOT_MARKERS = frozenset({"annotations", "jpegimages"})
IMAGE_DIRS = ("jpegimages", "images")
JOURNAL_NAME = "visapp-ingest.json"
LOCK_NAME = "visapp-ingest.lock"
PAUSE_ENV = "VISAPP_INGEST_PAUSE_AT"  # fault-injection point for tests: stop at this stage and wait to be killed
MAX_LISTED = 10


@dataclass
class IngestResult:
    """The new dataset version: what `visapp ingest` prints."""

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
    ignored: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        lines = [
            f"{self.raw_dir}: new dataset version {self.md5}{label}",
            f"  {self.images} images, {self.annotations} annotations, {self.nfiles} files, {_size(self.size)}",
        ]
        if self.mode == "append":
            lines.append(f"  appended {self.added} new files ({self.unchanged} already present with the same bytes)")
        if self.ignored:
            shown = ", ".join(self.ignored[:3]) + (", ..." if len(self.ignored) > 3 else "")
            lines.append(f"  left out {len(self.ignored)} files outside the dataset folder: {shown}")
        lines.append(f"  recorded in {self.raw_dir}.dvc; next: git commit it, and `dvc push` to share the data")
        return "\n".join(lines)


def _size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return ""


# ---------------------------------------------------------------- finding the dataset in a source


def _is_data_file(path: str) -> bool:
    suffix = PurePosixPath(path).suffix.lower()
    return suffix == ".xml" or suffix in IMAGE_SUFFIXES


def find_voc_root(paths: list[str], origin: str) -> str:
    """Relative file paths of a source -> the folder ('' for the top) that holds the VOC dataset.

    Raises:
        VisError: no XML and no image anywhere, or several datasets side by side.
    """
    candidates: set[str] = set()
    for path in paths:
        parts = path.split("/")
        for depth, part in enumerate(parts[:-1]):
            if part.casefold() in ROOT_MARKERS:
                candidates.add("/".join(parts[:depth]))
                break
    if candidates:
        depth = min(_depth(c) for c in candidates)
        shallowest = sorted(c for c in candidates if _depth(c) == depth)
        if len(shallowest) > 1:
            raise VisError(
                f"{origin} holds several VOC datasets ({', '.join(repr(c) for c in shallowest[:MAX_LISTED])}); "
                "ingest them one at a time (unzip, then `visapp ingest FOLDER --mode append`)"
            )
        root = shallowest[0]
    else:
        root = _common_folder(paths)
    if not any(_is_data_file(p) for p in _under(paths, root)):
        raise VisError(
            f"no VOC dataset in {origin}: found no .xml annotation and no image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "expected Annotations/ + JPEGImages/, annotations/ + images/, or each XML beside its image"
        )
    return root


def _depth(folder: str) -> int:
    return 0 if not folder else folder.count("/") + 1


def _under(paths: list[str], root: str) -> list[str]:
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


# ---------------------------------------------------------------- sources


class _Source:
    """A ZIP or a folder, vetted: `files` are safe relative paths; `stage` writes the dataset folder."""

    def __init__(self, path: Path, limits: ZipLimits) -> None:
        self.path = path
        self.origin = str(path)
        self.zip: SafeZip | None = None
        self.sizes: dict[str, int] = {}
        self.on_disk: dict[str, str] = {}  # folder sources: safe path -> the name as it is on disk
        if path.is_dir():
            self._scan_folder()
        elif path.is_file():
            self.zip = SafeZip(path, limits).__enter__()
            self.sizes = {e.path: e.info.file_size for e in self.zip.entries if not e.is_dir}
        else:
            raise VisError(f"{path}: no such file or folder; give a .zip archive or a VOC folder")
        self.files = sorted(self.sizes)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def _scan_folder(self) -> None:
        entries: list[tuple[str, bool, str]] = []
        for folder, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in sorted(dirs + names):
                full = Path(folder) / name
                rel = full.relative_to(self.path).as_posix()
                if full.is_symlink():
                    raise ZipRefused(
                        "symlink", f"{self.origin}: {rel!r} is a symbolic link; copy the file itself in (cp -L)"
                    )
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise ZipRefused(
                        "legacy_encoding",
                        f"{self.origin}: {rel.encode('utf-8', 'replace').decode()!r} has a name that is not valid "
                        "UTF-8; rename it",
                    ) from None
                try:
                    path = safe_relpath(rel)
                except ZipRefused as exc:
                    raise ZipRefused(exc.code, f"{self.origin}: {exc}") from None
                if is_litter(path) or name in dirs:
                    continue
                entries.append((path, False, rel))
                self.sizes[path] = full.stat().st_size
                self.on_disk[path] = rel
        check_collisions(entries, self.origin)

    def stage(self, dest: Path, root: str) -> None:
        """Write the files under `root` into the new folder `dest`, `root` stripped."""
        if self.zip is not None:
            self.zip.extract(dest, prefix=root)
            return
        try:
            dest.mkdir()
        except OSError as exc:
            raise os_error(exc, dest, "create") from None
        for rel in _under(self.files, root):
            target = dest / rel[len(root) + 1 :] if root else dest / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / self.on_disk[rel], target)  # sendfile: streams, whatever the size
            except OSError as exc:
                raise os_error(exc, exc.filename or target, "copy") from None


# ---------------------------------------------------------------- the repository, its lock and journal


def find_repo_root(start: Path) -> Path:
    """The folder holding `.dvc/` at or above `start`."""
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir():
            return folder
    raise VisError(f"{start} is not inside a DVC repository: run `dvc init` (or `make setup`) in the project first")


@contextlib.contextmanager
def _locked(repo_root: Path) -> Iterator[None]:
    tmp = repo_root / ".dvc" / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        handle = (tmp / LOCK_NAME).open("a+")
    except OSError as exc:
        raise os_error(exc, tmp, "write in") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if we are killed
        except BlockingIOError:
            raise VisError(
                f"another `visapp ingest` is running in {repo_root}; wait for it to finish, then retry"
            ) from None
        yield


def _journal_path(repo_root: Path) -> Path:
    return repo_root / ".dvc" / "tmp" / JOURNAL_NAME


def _dvc_file(raw: Path) -> Path:
    return raw.with_name(raw.name + ".dvc")


def _write_durably(path: Path, text: str, tmp: Path) -> None:
    """Write `text` to `tmp`, fsync it, rename it over `path`: a reader sees the old or the new file, whole."""
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise os_error(exc, path) from None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def recover(raw_dir: str | Path = "data/raw", repo_root: Path | None = None) -> str | None:
    """Finish or undo an interrupted ingest (see the module docstring); a line saying what was done, or None.

    Also removes the staging and old folders that an ingest killed before its journal was written left behind.

    Raises:
        VisError: another ingest is running, or the journal cannot be applied (the message says what to move).
    """
    raw = Path(raw_dir).absolute()
    repo_root = repo_root or find_repo_root(next(p for p in raw.parents if p.exists()))
    with _locked(repo_root):
        return _recover(raw, repo_root)


def _recover(raw: Path, repo_root: Path) -> str | None:
    """`recover`, for a caller that holds the lock."""
    journal_path = _journal_path(repo_root)
    message = None
    if journal_path.is_file():
        try:
            journal = json.loads(journal_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VisError(f"cannot read the ingest journal {journal_path}: {exc}; inspect data/ by hand") from None
        message = _apply_journal(repo_root, journal)
        journal_path.unlink()
        _fsync_dir(journal_path.parent)
    swept = sorted(raw.parent.glob(f".{raw.name}.ingest-*")) + sorted(raw.parent.glob(f".{raw.name}.old-*"))
    for leftover in swept:
        _rmtree(leftover)
    if swept and not message:
        message = f"removed {len(swept)} folder(s) left by an ingest killed before it changed anything"
    return message


def _apply_journal(repo_root: Path, journal: dict) -> str:
    raw = repo_root / journal["raw"]
    staging = repo_root / journal["staging"]
    old = repo_root / journal["old"]
    staged = staging / raw.name
    dvc_file = _dvc_file(raw)
    current = dvc_file.read_text(encoding="utf-8") if dvc_file.is_file() else None
    rel = journal["raw"]
    if not staged.exists() and current == journal["new_dvc"]:
        _finish(raw, staging, old, repo_root, journal.get("autostage", False))
        return f"completed an interrupted ingest: {rel} holds the version it was writing"
    try:
        if not staged.exists() and raw.exists():
            raw.rename(staged)  # the new data had been moved in, but raw.dvc was not yet written
        if old.exists():
            old.rename(raw)
    except OSError as exc:
        raise VisError(
            f"cannot undo an interrupted ingest ({exc.strerror}): move {old} back to {raw} by hand"
        ) from None
    _rmtree(staging)
    return f"undid an interrupted ingest: {rel} and {rel}.dvc are as they were before it"


def _finish(raw: Path, staging: Path, old: Path, repo_root: Path, autostage: bool) -> None:
    """After the commit point: what `dvc add` does for git, then remove the old data and the staging folder."""
    dvc_file = _dvc_file(raw)
    gitignore = raw.parent / ".gitignore"
    if (repo_root / ".git").exists():
        entry = f"/{raw.name}"
        lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
        if entry not in lines:
            tmp = raw.parent / f".{raw.name}.ingest-gitignore.tmp"  # swept like a staging folder if we die here
            _write_durably(gitignore, "\n".join([*lines, entry]) + "\n", tmp)
        if autostage:
            subprocess.run(
                ["git", "add", "--", str(dvc_file), str(gitignore)], cwd=repo_root, capture_output=True, check=False
            )
    _rmtree(old)
    _rmtree(staging)


def _checkpoint(stage: str) -> None:
    """Tests set VISAPP_INGEST_PAUSE_AT=<stage> to stop here and kill the process at a known point."""
    if os.environ.get(PAUSE_ENV) == stage:
        print(f"visapp ingest: paused at {stage}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


# ---------------------------------------------------------------- DVC


class _Dvc:
    """DVC in this process, with git switched off: it hashes and caches a staged folder and writes nothing else."""

    def __init__(self, repo_root: Path) -> None:
        from dvc.repo import Repo

        self.repo_root = repo_root
        try:
            self.repo = Repo(str(repo_root), config={"core": {"no_scm": True}})
        except Exception as exc:  # DVC raises its own exception types, all subclasses of Exception
            raise VisError(f"cannot open the DVC repository in {repo_root}: {exc}") from None
        self.autostage = bool(self.repo.config["core"].get("autostage", False))

    def close(self) -> None:
        self.repo.close()

    def unrecorded_changes(self, raw: Path) -> str | None:
        """Why replacing `raw` would lose data DVC does not hold, or None when `raw.dvc` records it exactly."""
        dvc_file = _dvc_file(raw)
        rel = raw.relative_to(self.repo_root).as_posix()
        if not dvc_file.is_file():
            return f"{rel} is not tracked by DVC ({rel}.dvc is missing)"
        try:
            status = self.repo.status(targets=[str(dvc_file)])
        except Exception as exc:
            raise VisError(f"cannot check {rel} against {rel}.dvc: {exc}") from None
        return f"{rel} has changes that {rel}.dvc does not record" if status else None

    def add(self, folder: Path, name: str | None) -> str:
        """Hash `folder` into the DVC cache; the text of the .dvc file for it (removed from disk)."""
        from dvc.exceptions import DvcException

        try:
            (stage,) = self.repo.add(str(folder))
            if name:
                stage.outs[0].annot.desc = name
                stage.dump()
        except OSError as exc:
            raise os_error(exc, self.repo_root / ".dvc" / "cache", "write the DVC cache in") from None
        except DvcException as exc:
            raise VisError(f"dvc add failed for the staged dataset: {exc}") from None
        dvc_file = _dvc_file(folder)
        text = dvc_file.read_text(encoding="utf-8")
        dvc_file.unlink()  # nobody may see a .dvc file in the staging folder (`dvc status` would list it)
        return text


def _read_out(dvc_text: str) -> dict:
    import yaml

    return yaml.safe_load(dvc_text)["outs"][0]


# ---------------------------------------------------------------- append


def _link_tree(src: Path, dest: Path) -> None:
    """`dest` = `src` as hard links (a copy where links are impossible). Files are never written in place."""
    for folder, dirs, names in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        dirs.sort()
        for name in names:
            try:
                os.link(Path(folder) / name, dest / rel / name)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    raise os_error(exc, dest / rel / name) from None
                try:
                    shutil.copy2(Path(folder) / name, dest / rel / name)
                except OSError as exc2:
                    raise os_error(exc2, dest / rel / name) from None


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)


def _files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        (Path(top) / name).relative_to(folder).as_posix() for top, _dirs, names in os.walk(folder) for name in names
    )


def _paired(paths: list[str]) -> bool:
    return any(p.split("/", 1)[0].casefold() == "annotations" for p in paths if "/" in p)


def _top_mapping(current: list[str], incoming: list[str], origin: str, raw_label: str) -> dict[str, str]:
    """Incoming top folder name -> the current dataset's spelling of it; refuse layouts that do not mix."""
    cur_paired, new_paired = _paired(current), _paired(incoming)
    cur_xml, new_xml = (any(p.casefold().endswith(".xml") for p in files) for files in (current, incoming))
    if (cur_paired and not new_paired and new_xml) or (new_paired and not cur_paired and cur_xml):
        layouts = {True: "Annotations/ + image folders", False: "the flat layout (each XML beside its image)"}
        raise VisError(
            f"cannot append {origin} to {raw_label}: it uses {layouts[new_paired]}, {raw_label} uses "
            f"{layouts[cur_paired]}; bring it into the same layout, or use --mode replace"
        )
    cur = {p.split("/", 1)[0].casefold(): p.split("/", 1)[0] for p in current if "/" in p}
    new = {p.split("/", 1)[0].casefold(): p.split("/", 1)[0] for p in incoming if "/" in p}
    mapping = {name: cur[key] for key, name in new.items() if key in cur}
    cur_images = [cur[k] for k in IMAGE_DIRS if k in cur]
    for key in IMAGE_DIRS:  # images/ -> JPEGImages/ when the current dataset has only the other one
        if key in new and key not in cur and len(cur_images) == 1:
            mapping[new[key]] = cur_images[0]
    return mapping


def _merge_lists(existing: Path, incoming: Path) -> str:
    old_lines = existing.read_text(encoding="utf-8", errors="replace").splitlines()
    seen = set(old_lines)
    new_lines = [ln for ln in incoming.read_text(encoding="utf-8", errors="replace").splitlines() if ln not in seen]
    return "\n".join(old_lines + new_lines) + "\n"


def _merge(incoming: Path, target: Path, origin: str, root: str, raw_label: str) -> tuple[int, int]:
    """Move the files of `incoming` into `target` (a linked copy of the current data); (added, unchanged).

    Checks every file before moving any: a clash refuses the whole append. `root` is where `incoming` was in
    the source, for the messages.
    """
    current, new = _files(target), _files(incoming)
    mapping = _top_mapping(current, new, origin, raw_label)
    existing = {rel.casefold(): rel for rel in current}
    plan: list[tuple[Path, str, str]] = []  # (incoming file, destination rel, action)
    clashes: list[str] = []
    for rel in new:
        src = incoming / rel
        shown = f"{root}/{rel}" if root else rel
        top, _, rest = rel.partition("/")
        dest_rel = f"{mapping.get(top, top)}/{rest}" if rest else rel
        same_name = existing.get(dest_rel.casefold())
        if same_name is None:
            plan.append((src, dest_rel, "add"))
        elif same_name != dest_rel:
            clashes.append(f"{shown} (in {origin}) differs only in letter case from {raw_label}/{same_name}")
        elif _same_bytes(src, target / dest_rel):
            plan.append((src, dest_rel, "same"))
        elif dest_rel.casefold().startswith("imagesets/") and dest_rel.endswith(".txt"):
            plan.append((src, dest_rel, "merge"))
        else:
            clashes.append(f"{raw_label}/{dest_rel} exists with other content than {shown} in {origin}")
    if clashes:
        more = len(clashes) - MAX_LISTED
        listed = "\n  ".join(clashes[:MAX_LISTED]) + (f"\n  ... and {more} more" if more > 0 else "")
        raise VisError(
            f"cannot append {origin}: {len(clashes)} file(s) would replace different data:\n  {listed}\n"
            "rename the new files (or remove the old ones and ingest again), or use --mode replace"
        )
    added = 0
    for src, dest_rel, action in plan:
        dest = target / dest_rel
        try:
            if action == "add":
                dest.parent.mkdir(parents=True, exist_ok=True)
                src.rename(dest)
                added += 1
            elif action == "merge":
                tmp = dest.with_name(dest.name + ".visapp-merge")
                tmp.write_text(_merge_lists(dest, src), encoding="utf-8")
                tmp.replace(dest)  # a new inode: the hard-linked original in data/raw is left as it was
        except OSError as exc:
            raise os_error(exc, dest) from None
    return added, len(plan) - added


# ---------------------------------------------------------------- counting


def count_samples(raw_dir: Path) -> tuple[int, int]:
    """(images, annotations) as the validate stage will pair them."""
    from visapp.voc import discover_samples

    samples = discover_samples(raw_dir)
    return sum(s.image is not None for s in samples), sum(s.annotation is not None for s in samples)


# ---------------------------------------------------------------- ingest


def _say(line: str) -> None:
    print(line, flush=True)  # progress of a long ingest shows as it happens, also through a pipe


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


def ingest(
    source: str | Path,
    raw_dir: str | Path = "data/raw",
    *,
    mode: str = "replace",
    name: str | None = None,
    limits: ZipLimits | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> IngestResult:
    """Put the VOC dataset in `source` (a .zip or a folder) into `raw_dir` and record it with DVC.

    Args:
        source: a ZIP archive or a folder holding a VOC dataset, possibly under wrapper folders.
        raw_dir: the dataset folder of the pipeline (params.yaml's `paths.raw`), inside a DVC repository.
        mode: "replace" the current dataset, or "append" the new samples to it.
        name: a name for the new version, recorded as `desc` in `<raw_dir>.dvc`.
        limits: ZIP safety limits (`visapp.zipsafe.ZipLimits`).
        force: replace even a `raw_dir` whose content DVC does not hold (it is lost).
        log: where progress lines go (default: stdout, flushed).

    Raises:
        VisError: anything the user can fix; `raw_dir` and its .dvc file are then as they were.
    """
    if mode not in MODES:
        raise VisError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    log = log or _say
    source = Path(source)
    raw = Path(raw_dir).absolute()
    repo_root = find_repo_root(next(p for p in raw.parents if p.exists()))
    raw_label = raw.relative_to(repo_root).as_posix() if raw.is_relative_to(repo_root) else str(raw)
    _refuse_overlap(source.absolute(), raw)
    try:
        raw.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, raw.parent, "create") from None
    try:
        with _locked(repo_root):
            return _ingest_source(source, raw, raw_label, repo_root, mode, name, limits, force, log)
    except OSError as exc:  # the specific places say more; this keeps any other one a message, not a traceback
        raise os_error(exc, exc.filename or raw.parent, "write") from None


def _ingest_source(
    source: Path,
    raw: Path,
    raw_label: str,
    repo_root: Path,
    mode: str,
    name: str | None,
    limits: ZipLimits | None,
    force: bool,
    log: Callable[[str], None],
) -> IngestResult:
    """Under the lock: recover, vet the source, find the dataset, check the replace is safe, then stage."""
    note = _recover(raw, repo_root)
    if note:
        log(note)
    src = _Source(source, limits or ZipLimits())
    try:
        root = find_voc_root(src.files, src.origin)
        wanted = _under(src.files, root)
        kept = set(wanted)
        ignored = [p for p in src.files if p not in kept]
        _check_free_space(raw.parent, sum(src.sizes[p] for p in wanted))
        dvc = _Dvc(repo_root)
        try:
            if mode == "replace" and raw.exists() and not force:
                problem = dvc.unrecorded_changes(raw)
                if problem:
                    raise VisError(
                        f"{problem}: replacing it would lose that data; record it first (`dvc add {raw_label}` "
                        "and commit), or pass --force to discard it"
                    )
            return _stage_and_commit(src, root, raw, raw_label, repo_root, dvc, mode, name, ignored, log)
        finally:
            dvc.close()
    finally:
        src.close()


def _refuse_overlap(source: Path, raw: Path) -> None:
    src = source.resolve()
    if src == raw.resolve() or src.is_relative_to(raw.resolve()):
        raise VisError(f"{source} is inside {raw}: ingest from a folder outside the dataset")
    if src.is_dir() and raw.resolve().is_relative_to(src):
        raise VisError(f"{source} contains {raw}: give the folder that holds only the new dataset")


def _stage_and_commit(
    src: _Source,
    root: str,
    raw: Path,
    raw_label: str,
    repo_root: Path,
    dvc: _Dvc,
    mode: str,
    name: str | None,
    ignored: list[str],
    log: Callable[[str], None],
) -> IngestResult:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{raw.name}.ingest-", dir=raw.parent))
    except OSError as exc:
        raise os_error(exc, raw.parent, "create a folder in") from None
    staged = staging / raw.name
    committed = False
    try:
        where = f" ({root}/)" if root else ""
        log(f"staging {src.origin}{where} in {staging.relative_to(repo_root)}")
        added = unchanged = 0
        if mode == "append" and raw.is_dir():
            _link_tree(raw, staged)
            src.stage(staging / "incoming", root)
            added, unchanged = _merge(staging / "incoming", staged, src.origin, root, raw_label)
        else:
            src.stage(staged, root)
            added = len(_under(src.files, root))
        images, annotations = count_samples(staged)
        _checkpoint("staged")
        log(f"hashing {images} images and {annotations} annotations into the DVC cache")
        new_dvc = dvc.add(staged, name)
        _checkpoint("hashed")
        committed = _commit(raw, staging, repo_root, new_dvc, dvc.autostage)
    finally:
        if not committed:
            _rmtree(staging)
    out = _read_out(new_dvc)
    return IngestResult(
        raw_dir=raw_label,
        md5=str(out["md5"]).removesuffix(".dir"),
        nfiles=int(out.get("nfiles", 0)),
        size=int(out.get("size", 0)),
        images=images,
        annotations=annotations,
        mode=mode,
        name=name,
        added=added,
        unchanged=unchanged,
        ignored=ignored,
    )


def _commit(raw: Path, staging: Path, repo_root: Path, new_dvc: str, autostage: bool) -> bool:
    """Swap the staged folder in under a journal; True once `raw.dvc` is the new one (the commit point)."""
    old = Path(tempfile.mkdtemp(prefix=f".{raw.name}.old-", dir=raw.parent))
    old.rmdir()  # reserve a unique name; the rename below creates it
    journal = {
        "raw": raw.relative_to(repo_root).as_posix(),
        "staging": staging.relative_to(repo_root).as_posix(),
        "old": old.relative_to(repo_root).as_posix(),
        "new_dvc": new_dvc,
        "autostage": autostage,
    }
    journal_path = _journal_path(repo_root)
    _write_durably(journal_path, json.dumps(journal, indent=2), journal_path.with_suffix(".tmp"))
    _checkpoint("journaled")
    try:
        if raw.exists():
            raw.rename(old)
        _checkpoint("moved-old")
        (staging / raw.name).rename(raw)
        _checkpoint("moved-new")
        _write_durably(_dvc_file(raw), new_dvc, staging / "raw.dvc.new")
    except BaseException as exc:
        _apply_journal(repo_root, journal)  # undo now; the journal stays if even that fails
        journal_path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise os_error(exc, raw, "replace") from None
        raise
    _checkpoint("committed")
    _finish(raw, staging, old, repo_root, autostage)
    journal_path.unlink(missing_ok=True)
    _fsync_dir(journal_path.parent)
    return True
