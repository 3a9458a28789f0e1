"""Validation issues and report.json: the one registry of issue codes, their severity and meaning.

Every problem validate finds is an `Issue` with a code from `CODES`; an `error` rejects the whole sample, a
`warning` keeps it. The README's table and docs/ are checked against `CODES` by the test suite.

report.json: `{"samples", "accepted", "rejected", "warnings", "by_code": {code: n}, "issues": [{"path", "code",
"severity", "message"}, ...]}`, issues sorted by path then code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypedDict

ERROR, WARNING = "error", "warning"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Code:
    """An issue code's severity, what it means, and whether it is a dataset-quality finding."""

    severity: str
    meaning: str
    quality: bool = False  # a dataset-quality finding (visapp.dataset.quality), beyond validity: a warning


CODES: dict[str, Code] = {
    "image_unreadable": Code(ERROR, "empty file, not an image, or fails to decode"),
    "image_truncated": Code(ERROR, "decodes only partly (e.g. JPEG without its end marker)"),
    "image_trailing_data": Code(
        WARNING, "complete image followed by extra bytes; training reads a copy, never rewrites it in `data/raw`"
    ),
    "image_too_large": Code(ERROR, "more pixels than `data.max_image_pixels` (the message says how to raise it)"),
    "image_missing": Code(ERROR, "annotation without an image"),
    "annotation_missing": Code(
        WARNING, "image without annotation: kept as background (`data.allow_background`; an error when false)"
    ),
    "xml_malformed": Code(ERROR, "not well-formed XML, or not a VOC `<annotation>`"),
    "xml_unsafe": Code(ERROR, "DTD, entity declaration or external reference"),
    "size_mismatch": Code(ERROR, "`<size>` disagrees with the decoded image (also after EXIF rotation)"),
    "size_missing": Code(WARNING, "`<size>` absent or 0; the decoded size is used"),
    "exif_rotated": Code(
        WARNING, "EXIF orientation other than 1: labels are written in the rotated frame training sees"
    ),
    "class_unknown": Code(ERROR, "`<name>` not in `data.classes`"),
    "bbox_invalid": Code(ERROR, "missing or non-numeric coordinate, xmin >= xmax or ymin >= ymax"),
    "bbox_out_of_bounds": Code(ERROR, "more than `data.bbox_tolerance_px` outside the image"),
    "bbox_clipped": Code(WARNING, "outside by at most the tolerance; clipped"),
    "duplicate_image": Code(WARNING, "byte-identical to another image"),
    "split_leak": Code(ERROR, "identical images in different `ImageSets` splits"),
    "id_conflict": Code(
        ERROR, "two images with the same name but for the extension (`a.jpg`, `a.png`): their labels would collide"
    ),
    "imageset_unknown": Code(WARNING, "an ImageSets list names an id that matches no sample"),
    "annotation_conflict": Code(
        ERROR, "two annotations claim one image (same name, or a `<filename>`): which one is right is unknown"
    ),
    "name_not_utf8": Code(ERROR, "a file name that is not UTF-8 (a legacy code page): rename it (`convmv`)"),
    "dataset_empty": Code(ERROR, "no samples found, or none accepted (path `.`): nothing to train on"),
    "class_absent": Code(WARNING, "a class of `data.classes` that no accepted sample has an object of (path `.`)"),
    "path_unreadable": Code(
        ERROR, "a folder, list or file that cannot be read (permissions, a broken link): nothing in it is checked"
    ),
    # Dataset quality (`quality:` params): what deserves a look, never a rejection.
    "box_duplicate": Code(WARNING, "two boxes of one class overlap with IoU >= `quality.box_iou`", quality=True),
    "box_class_conflict": Code(
        WARNING, "two boxes of different classes overlap with IoU >= `quality.box_iou`", quality=True
    ),
    "box_tiny": Code(
        WARNING, "a box side below `quality.min_box_px` once the image is scaled to `train.imgsz`", quality=True
    ),
    "box_size_outlier": Code(
        WARNING, "a box's area (relative to its image) far from its class's (median/MAD, log scale)", quality=True
    ),
    "box_aspect_outlier": Code(
        WARNING, "a box's width/height ratio far from its class's (median/MAD, log scale)", quality=True
    ),
    "image_near_duplicate": Code(
        WARNING, "looks like another image of its split (pHash distance <= `quality.phash_distance`)", quality=True
    ),
    "near_duplicate_leak": Code(
        WARNING, "looks like an image of another split (pHash distance <= `quality.phash_distance`)", quality=True
    ),
    "image_dark": Code(WARNING, "mean grey level below `quality.dark_mean`", quality=True),
    "image_bright": Code(WARNING, "mean grey level above `quality.bright_mean`", quality=True),
    "image_blurry": Code(
        WARNING, "variance of the Laplacian (at 1/8 scale) below `quality.blur_variance`", quality=True
    ),
    "image_aspect_ratio": Code(WARNING, "long side / short side above `quality.max_aspect_ratio`", quality=True),
    "coords_convention": Code(
        WARNING, "the boxes look 0-based or 1-based, unlike `data.one_based_coords` (path `.`)", quality=True
    ),
    "class_name_variant": Code(
        WARNING, "class names that differ only in letter case or spaces (path `.`)", quality=True
    ),
    "class_rare": Code(WARNING, "a class with fewer than `quality.min_class_objects` objects (path `.`)", quality=True),
    "class_split_missing": Code(WARNING, "a class with objects, but none in one split (path `.`)", quality=True),
    "class_imbalance": Code(
        WARNING, "most / fewest objects per class above `quality.max_imbalance` (path `.`)", quality=True
    ),
}
QUALITY_CODES = tuple(code for code, entry in CODES.items() if entry.quality)
SUMMARY_PROBLEMS = 10


@dataclass(frozen=True, order=True)
class Issue:
    """One problem: the file it is in (relative to the dataset folder), its code, severity and what to do."""

    path: str
    code: str
    severity: str
    message: str

    @classmethod
    def of(cls, path: str, code: str, message: str, severity: str | None = None) -> Issue:
        """An issue with the code's own severity unless another is given (annotation_missing can be an error).

        Path and message are made printable: a file name that is not UTF-8 shows its odd bytes as `\\xf1`.
        """
        return cls(printable(path), code, severity or CODES[code].severity, printable(message))


def printable(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name (Python holds them as lone surrogates, which no UTF-8 file,
    JSON document or terminal can take) written as backslash escapes: `Se\\udcf1al.jpg` -> `Se\\xf1al.jpg`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _escaped_bytes_only(text) else None
        return raw.decode("utf-8", "backslashreplace") if raw else text.encode("utf-8", "backslashreplace").decode()


def _escaped_bytes_only(text: str) -> bool:
    return all(not "\ud800" <= ch <= "\udfff" or "\udc80" <= ch <= "\udcff" for ch in text)


def has_odd_bytes(name: str) -> bool:
    """Whether a file name as the OS gave it holds bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in name)


class IssueEntry(TypedDict):
    """An issue as report.json holds it."""

    path: str
    code: str
    severity: str
    message: str


class Report(TypedDict):
    """report.json: counts, counts per code, every issue."""

    samples: int
    accepted: int
    rejected: int
    warnings: int
    by_code: dict[str, int]
    issues: list[IssueEntry]


def has_errors(report: Report) -> bool:
    """Whether the dataset fails validation: a rejected sample, or an error outside any sample (a folder)."""
    return bool(report["rejected"]) or any(issue["severity"] == ERROR for issue in report["issues"])


def build_report(samples: int, rejected: int, issues: list[Issue]) -> Report:
    """report.json's content: counts, counts per code, every issue (sorted by path, then code)."""
    issues = sorted(issues)
    return {
        "samples": samples,
        "accepted": samples - rejected,
        "rejected": rejected,
        "warnings": sum(1 for issue in issues if issue.severity == WARNING),
        "by_code": dict(sorted(Counter(issue.code for issue in issues).items())),
        "issues": [{"path": i.path, "code": i.code, "severity": i.severity, "message": i.message} for i in issues],
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_summary(report: Report, problems: int = SUMMARY_PROBLEMS) -> str:
    """A few lines for a person: totals, counts per code (errors, then warnings), the first problems."""
    lines = [
        f"validated {_plural(report['samples'], 'sample')}: {report['accepted']} accepted, "
        f"{report['rejected']} rejected, {_plural(report['warnings'], 'warning')}"
    ]
    issues = report["issues"]
    # A code's severity, as reported (annotation_missing is an error only without allow_background).
    severity_of = {issue["code"]: issue["severity"] for issue in issues}
    for severity, title in ((ERROR, "errors"), (WARNING, "warnings")):
        counts = [f"{code} {n}" for code, n in report["by_code"].items() if severity_of.get(code) == severity]
        if counts:
            lines.append(f"  {title + ':':<10}{', '.join(counts)}")
    if issues:
        first = sorted(issues, key=lambda issue: issue["severity"] != ERROR)[:problems]
        lines.append(f"first {len(first)} of {len(issues)} problems:" if len(issues) > len(first) else "problems:")
        code_width = max(len(issue["code"]) for issue in first) + 1
        lines += [f"  {i['severity']:<8}{i['code']:<{code_width}}{i['path']}: {i['message']}" for i in first]
    return "\n".join(lines)
