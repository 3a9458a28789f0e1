"""What needs every sample of a dataset, not one: id conflicts, byte-identical images (duplicates, split
leaks), ids a list names that no sample has, classes no sample has, and why nothing was accepted.
"""

from __future__ import annotations

from collections import Counter as Tally
from pathlib import Path

from visapp.dataset.sample_checks import CLASSES_HOME
from visapp.formats.manifest import ManifestRow
from visapp.formats.report import ERROR, Issue, printable
from visapp.formats.voc_ids import listed_id, sample_id
from visapp.formats.voc_image_sets import ImageSet
from visapp.formats.voc_layout import ANNOTATION_DIRS, SampleFiles


def id_conflicts(samples: list[SampleFiles]) -> dict[str, str]:
    """image -> the image that keeps the shared id; the annotated one (else the first) keeps it."""
    by_id: dict[str, list[tuple[str, SampleFiles]]] = {}
    for files in samples:
        if files.image:
            by_id.setdefault(sample_id(files.image), []).append((files.image, files))
    conflicts: dict[str, str] = {}
    for group in by_id.values():
        if len(group) > 1:
            keeper = next((image for image, files in group if files.annotation), group[0][0])
            conflicts.update({image: keeper for image, _ in group if image != keeper})
    return conflicts


def _annotation_id(rel: str) -> str:
    """The id an annotation would give its sample: its path without the annotation folder and extension."""
    head, _, rest = rel.partition("/")
    return sample_id(rest if rest and head.lower() in ANNOTATION_DIRS else rel)


def unknown_listed_ids(samples: list[SampleFiles], splits: dict[str, ImageSet]) -> list[Issue]:
    """imageset_unknown: each id a list names that no image and no annotation has."""
    known = {listed_id(sample_id(files.image)) for files in samples if files.image}
    known |= {listed_id(_annotation_id(files.annotation)) for files in samples if files.annotation}
    return [
        Issue.of(
            image_set.path,
            "imageset_unknown",
            f"lists {ident!r}, which matches no image or annotation: remove it from the list, or add the sample",
        )
        for image_set in splits.values()
        for ident in sorted(image_set.ids - known)
    ]


def nothing_accepted(raw_dir: Path, samples: int, issues: list[Issue]) -> str:
    """dataset_empty's message: why there is nothing to train on, the most common reasons first."""
    if samples:
        counts = Tally(issue.code for issue in issues if issue.severity == ERROR)
        reasons = ", ".join(f"{code} ({n})" for code, n in counts.most_common(3))
        return (
            f"none of the {samples} samples was accepted; the most common errors: {reasons}: fix them "
            "(every issue is listed in the report), then validate again"
        )
    others: Tally[str] = Tally()
    for path in raw_dir.rglob("*"):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(raw_dir).parts):
            others[path.suffix.lower() or "(no extension)"] += 1
    found = (
        f"it holds {sum(others.values())} other files ({', '.join(f'{s} {n}' for s, n in others.most_common(4))})"
        if others
        else "it holds no files (hidden ones aside)"
    )
    return (
        f"no images or annotations found in {printable(str(raw_dir))}: {found}. A VOC dataset is Annotations/*.xml "
        "beside JPEGImages/ (or images/), or each XML beside its image; images are .jpg, .png, .bmp or .webp. An "
        "archive must be unpacked first (`visapp ingest <archive>` does it)"
    )


class ByteTwins:
    """Images met one at a time, by their bytes' SHA-256: which earlier image a later one copies
    (`duplicate_image`), and, once every image is met, the splits of each set of copies (`split_leak`)."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[str, str | None]] = {}  # sha256 -> (first image, its split)
        self._twins: dict[str, list[tuple[str, str | None]]] = {}  # sha256 -> every (image, split); copies only

    def first_of(self, image: str, sha256: str, split: str | None) -> str | None:
        """The first image met with these bytes, when it is another one; None for the first."""
        first = self._first.setdefault(sha256, (image, split))
        if first[0] == image:
            return None
        self._twins.setdefault(sha256, [first]).append((image, split))
        return first[0]

    def settle_splits(self, rows: dict[str, ManifestRow], rejected: set[str]) -> list[Issue]:
        """`split_leak` on every copy of images listed in different splits (rejected: dropped from `rows`, added
        to `rejected`); an unlisted copy of a listed image takes its split, so identical bytes share one."""
        issues = []
        for members in self._twins.values():
            listed = sorted({split for _, split in members if split})
            if len(listed) > 1:
                names = ", ".join(f"{image} ({split or 'not listed'})" for image, split in members)
                for image, _ in members:
                    issues.append(Issue.of(image, "split_leak", f"identical images in different splits: {names}"))
                    rejected.add(image)
                    rows.pop(image, None)
            elif listed:
                for image, _ in members:
                    if image in rows:
                        rows[image].split = listed[0]
        return issues


def absent_classes(classes: list[str], manifest: list[ManifestRow]) -> list[Issue]:
    """class_absent: each class of data.classes that no accepted sample has an object of."""
    seen = {obj.name for row in manifest for obj in row.objects}
    return [
        Issue.of(
            ".",
            "class_absent",
            f"data.classes lists {name!r}, but no accepted sample has an object of it: training cannot "
            f"learn it; remove it from {CLASSES_HOME}, or add samples of it",
        )
        for name in classes
        if name not in seen
    ]


def number_classes_found(manifest: list[ManifestRow]) -> None:
    """Without data.classes, every name is a class: ids follow the sorted names of the accepted objects."""
    names = sorted({obj.name for row in manifest for obj in row.objects})
    ids = {name: index for index, name in enumerate(names)}
    for row in manifest:
        for obj in row.objects:
            obj.class_id = ids[obj.name]
