"""`visapp ingest --mode append`: the new files merged into a hard-linked copy of the current dataset.

Nothing is ever written into an existing file in place (the copy shares inodes with `data/raw` and the DVC
cache): a file is added, left alone when it holds the same bytes, or, for an `ImageSets/Main/*.txt` list,
replaced by a new file with the current lines and then the incoming lines that name ids the current list lacks
(ids compared as validation compares them: `visapp.formats.voc_image_sets`). A name that exists with other
bytes, or a list that is not UTF-8, refuses the whole append. The incoming folders take the current spelling
(`images/` goes into `JPEGImages/`, `xml/` into `Annotations/`, when that is what `data/raw` uses), the
layouts told apart as validation tells them (`visapp.formats.voc_layout.layout_of`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from visapp.errors import VisError
from visapp.formats.voc_image_sets import line_id
from visapp.formats.voc_layout import layout_of
from visapp.fsio import os_error

MAX_LISTED = 10


def link_tree(src: Path, dest: Path) -> None:
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


def _top_mapping(current: list[str], incoming: list[str], origin: str, raw_label: str) -> dict[str, str]:
    """Incoming top folder name -> the current dataset's spelling of it; refuse layouts that do not mix."""
    cur_layout, new_layout = layout_of(current), layout_of(incoming)
    cur_paired, new_paired = cur_layout.annotations is not None, new_layout.annotations is not None
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
    if cur_layout.annotations and new_layout.annotations:  # `annotations/` or `xml/` -> `Annotations/`
        mapping[new_layout.annotations] = cur_layout.annotations
    if len(cur_layout.image_tops) == 1:  # images/ -> JPEGImages/ when the current dataset has only the other one
        for top in new_layout.image_tops:
            if top.casefold() not in cur:
                mapping[top] = cur_layout.image_tops[0]
    return mapping


def _list_text(path: Path, shown: str) -> str:
    """An ImageSets list's text, without its byte order mark; refused, naming it, when it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VisError(
            f"cannot merge the ImageSets list {shown}: byte 0x{exc.object[exc.start]:02X} is not UTF-8; re-save it "
            "as UTF-8 (e.g. `iconv -f WINDOWS-1252 -t UTF-8`), then append again"
        ) from None
    except OSError as exc:
        raise os_error(exc, path, "read") from None


def merged_list(existing: str, incoming: str) -> str:
    """The current list's lines, then each line of the incoming list that names an id the current one does not
    (ids as `visapp.formats.voc_image_sets` reads them: `000001.jpg` and `000001` are one id; comments and
    blank lines of the incoming list are left out)."""
    old_lines = existing.splitlines()
    seen = {line_id(line) for line in old_lines} - {None}
    new_lines = []
    for line in incoming.splitlines():
        ident = line_id(line)
        if ident is not None and ident not in seen:
            seen.add(ident)
            new_lines.append(line)
    return "\n".join(old_lines + new_lines) + "\n"


def merge(incoming: Path, target: Path, origin: str, root: str, raw_label: str) -> tuple[int, int]:
    """Move the files of `incoming` into `target` (a linked copy of the current data); (added, unchanged).

    Checks every file before moving any: a clash refuses the whole append. `root` is where `incoming` was in
    the source, for the messages.
    """
    current, new = _files(target), _files(incoming)
    mapping = _top_mapping(current, new, origin, raw_label)
    existing = {rel.casefold(): rel for rel in current}
    plan: list[tuple[Path, str, str]] = []  # (incoming file, destination rel, action)
    merged: dict[str, str] = {}  # destination rel -> the merged ImageSets list, made before anything moves
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
            merged[dest_rel] = merged_list(
                _list_text(target / dest_rel, f"{raw_label}/{dest_rel}"), _list_text(src, f"{shown} (in {origin})")
            )
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
                tmp.write_text(merged[dest_rel], encoding="utf-8")
                tmp.replace(dest)  # a new inode: the hard-linked original in data/raw is left as it was
        except OSError as exc:
            raise os_error(exc, dest) from None
    return added, len(plan) - added
