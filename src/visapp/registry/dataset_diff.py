"""`visapp diff REV_A REV_B`: the datasets of two revisions compared, and the gate a CI job runs before training.

A revision is a Git revision (commit, branch, tag, `HEAD~1`) or a model version (`yolo@v1.0.0`, `yolo#prod`,
`v1.0.0`, `yolo`: resolved as `visapp lineage` resolves them). Its dataset (`paths.raw` as that commit's
params.yaml says, else today's) is read as it was at that commit through DVC (Git-tracked files from Git,
DVC-tracked ones from the local cache or the remote), and the workspace is never touched.

Only the annotations are downloaded: images are compared by the md5 DVC recorded for them (hashed here only
when Git holds them). The VOC pairing of validation runs on a stand-in folder in which each image is an empty
file of its name (a file without an image extension keeps its first bytes, by which an image is recognised).
The comparison itself is `visapp.dataset.diff`.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visapp.composition import applicable_params, compose
from visapp.config import PARAMS_FILE
from visapp.dataset.diff import DatasetDiff, SampleSet, diff_samples, gate, headline, read_samples
from visapp.dataset.diff_report import format_diff
from visapp.errors import VisError
from visapp.formats.image_formats import has_image_suffix
from visapp.formats.voc_layout import IMAGE_SETS_DIR
from visapp.integrations import git
from visapp.integrations.dvc import Revision
from visapp.registry.history import Snapshot, lookup, snapshot
from visapp.registry.refs import parse_ref
from visapp.registry.versions import resolve

log = logging.getLogger(__name__)

HEAD_BYTES = 16  # enough of a file without an image extension to tell whether it is an image


@dataclass(frozen=True)
class DatasetVersion:
    """One side of the comparison: what the user named, the commit it resolved to, the dataset folder there."""

    revision: str
    commit: str
    raw_path: str
    skipped: list[tuple[str, str]]  # (path, why) of files left out of the comparison


@dataclass
class RevisionDiff:
    """The datasets of two revisions compared: the versions, their diff, its headline numbers, the gate's verdict."""

    before: DatasetVersion
    after: DatasetVersion
    diff: DatasetDiff
    headline: dict[str, int | float]
    limits: dict[str, float]
    failures: list[str]  # the limits exceeded; empty when the gate passes


# ---------------------------------------------------------------- the gate's limits


def gate_limits(overrides: Mapping[str, float | None], params_file: Path = PARAMS_FILE) -> dict[str, float]:
    """The `diff.*` limits of params.yaml (else of conf/) with the command line's over them, checked as params."""
    limits = {name: value for name, value in overrides.items() if value is not None}
    return asdict(applicable_params(params_file.parent, {"diff": limits}).diff)


# ---------------------------------------------------------------- reading a revision's dataset


def resolve_revision(root: Path, text: str) -> str:
    """A Git revision or a model version -> its commit; VisError naming what was tried."""
    if not git.is_repository(root):
        raise VisError(f"{root} is not a Git repository: run visapp diff in the project")
    commit = git.commit_of(root, text)
    if commit:
        return commit
    try:
        ref = parse_ref(text)
    except VisError:
        ref = None
    if ref is not None:
        try:
            return resolve(root, ref).commit
        except VisError:
            if ref.version or ref.stage:  # it can only mean a model version: say why that one is missing
                raise
    raise VisError(
        f"unknown revision {text!r}: neither a commit, branch or tag here (`git log --oneline`, `git tag`) nor a "
        "model version (`visapp models`)"
    )


def _raw_path(snap: Snapshot) -> str:
    """The dataset folder of a commit: `paths.raw` of its params.yaml, else of today's, else of conf/ (where
    every path is declared)."""
    for params in (snap.yaml(str(PARAMS_FILE)), snap.current):
        try:
            return str(lookup(params, "paths.raw")).strip("/")
        except KeyError:
            continue
    return str(lookup(compose(), "paths.raw")).strip("/")


def _stand_in(revision: Revision, raw: str, listing: Mapping[str, str | None], folder: Path) -> None:
    """Lay out the dataset's files in `folder`: annotations whole, images empty, other files' first bytes."""
    annotations = {}
    for rel in sorted(listing):
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts) or (
            len(parts) > 1 and parts[0].lower() == IMAGE_SETS_DIR[0].lower()
        ):
            continue  # VOC discovery skips hidden files and the split lists
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.lower().endswith(".xml"):
            annotations[f"{raw}/{rel}"] = dest
        elif has_image_suffix(rel):
            dest.touch()
        else:
            dest.write_bytes(revision.read_bytes(f"{raw}/{rel}", HEAD_BYTES))
    revision.download(annotations)


def read_dataset(root: Path, text: str) -> tuple[DatasetVersion, SampleSet]:
    """The samples of the dataset at a revision (see the module docstring)."""
    commit = resolve_revision(root, text)
    with snapshot(root, commit) as snap:
        raw = _raw_path(snap)
        log.info("reading %s at %s (commit %s)", raw, text, commit[:12])
        listing = snap.revision.files(raw)
        if listing is None:
            raise VisError(
                f"no dataset at {text} (commit {commit[:12]}): {raw} is neither in Git nor tracked by DVC there "
                f"(no {raw}.dvc)"
            )

        def image_hash(rel: str) -> str:
            recorded = listing[rel]
            if recorded:
                return recorded
            return hashlib.md5(snap.revision.read_bytes(f"{raw}/{rel}"), usedforsecurity=False).hexdigest()

        with tempfile.TemporaryDirectory(prefix="visapp-diff-") as tmp:
            _stand_in(snap.revision, raw, listing, Path(tmp))
            samples = read_samples(Path(tmp), image_hash)
    if samples.skipped:
        log.warning("%s: %d files left out of the comparison (--json lists them)", text, len(samples.skipped))
    return DatasetVersion(text, commit, raw, samples.skipped), samples


def diff_revisions(root: str | Path, before: str, after: str, limits: Mapping[str, float]) -> RevisionDiff:
    """Compare the datasets of two revisions and check the result against the gate's limits."""
    root = Path(root).resolve()
    version_before, samples_before = read_dataset(root, before)
    version_after, samples_after = read_dataset(root, after)
    diff = diff_samples(samples_before.samples, samples_after.samples)
    numbers = headline(diff)
    return RevisionDiff(version_before, version_after, diff, numbers, dict(limits), gate(numbers, limits))


# ---------------------------------------------------------------- output


def as_json(result: RevisionDiff) -> dict[str, Any]:
    """The comparison as plain data (`visapp diff --json`)."""
    return asdict(result)


def format_revision_diff(result: RevisionDiff) -> str:
    """The human report: the two versions, the diff, what was left out, and the gate's verdict."""
    lines = [
        f"dataset {result.before.raw_path} at {result.before.revision} ({result.before.commit[:12]}) -> "
        f"{result.after.raw_path} at {result.after.revision} ({result.after.commit[:12]})",
        "no change: the same samples, images and boxes" if result.diff.is_empty() else format_diff(result.diff),
    ]
    for version in (result.before, result.after):
        if version.skipped:
            lines.append(f"left out at {version.revision}: {len(version.skipped)} files (--json lists them)")
    verdict = "; ".join(result.failures) if result.failures else "within the limits"
    lines.append(f"gate: {'FAIL' if result.failures else 'pass'}: {verdict}")
    return "\n".join(lines)
