"""VOC's split lists, ImageSets/Main/{train,val,test}.txt <-> the ids each names (see `visapp.formats.voc_ids`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from visapp.formats import SPLITS
from visapp.formats.voc_ids import listed_id
from visapp.formats.voc_layout import IMAGE_SETS_DIR, Problems, find_child_folder, folder_entries
from visapp.fsio import unreadable


def image_set_text(ids: list[str]) -> str:
    """An ImageSets/Main list: one id a line."""
    return "".join(f"{ident}\n" for ident in ids)


@dataclass(frozen=True)
class ImageSet:
    """One ImageSets/Main list: its path (relative to the dataset folder) and the ids it names (see listed_id)."""

    path: str
    ids: frozenset[str]


def line_id(line: str) -> str | None:
    """The id a list's line names (see `listed_id`); None for a blank line or a comment (a line starting with
    `#`: `dog#1` is an id). VOC's class lists (`000005 -1`) give their first word."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    words = line.split()
    if len(words) == 2 and words[1] in ("-1", "0", "1"):
        line = words[0]
    return listed_id(line)


def _list_ids(text: str) -> frozenset[str]:
    """The ids of one list, one a line."""
    return frozenset(ident for ident in map(line_id, text.splitlines()) if ident is not None)


def read_image_sets(raw_dir: Path, problems: Problems | None = None) -> dict[str, ImageSet]:
    """ImageSets/Main/{train,val,test}.txt -> {split: ImageSet}; {} when there are none.

    A UTF-8 byte order mark and CRLF line ends are taken off. A list or folder that cannot be read is added to
    `problems`: splits must never fall back to hashing without a word.
    """
    problems = [] if problems is None else problems
    sets_dir = find_child_folder(Path(raw_dir), "", IMAGE_SETS_DIR[0], problems)
    main_dir = find_child_folder(sets_dir[0], sets_dir[1], IMAGE_SETS_DIR[1], problems) if sets_dir else None
    if main_dir is None:
        return {}
    found: dict[str, ImageSet] = {}
    files = {entry.name.lower(): entry for entry in folder_entries(main_dir[0], main_dir[1], problems)}
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
