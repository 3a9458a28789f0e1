"""GTO, the model registry in Git tags: register, promote, list, find. Every call to GTO goes through here.

A version is an annotated tag `NAME@vX.Y.Z` on a commit; a promotion to a stage is a tag `NAME#STAGE#N`.
GTO ignores tags that are not full SemVer (`yolo@v1` is not a version to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from visapp.errors import VisError

FIRST_VERSION = "v1.0.0"


@dataclass(frozen=True)
class VersionEntry:
    """One registered version as GTO sees it."""

    version: str
    tag: str
    commit: str
    created: str  # ISO 8601
    message: str
    stages: list[str] = field(default_factory=list)


def _gto_error(exc: Exception, what: str) -> VisError:
    return VisError(f"GTO could not {what}: {exc}")


def versions(root: Path, name: str) -> list[VersionEntry]:
    """Every registered version of `name` (none before the first release)."""
    import gto.api
    from gto.exceptions import ArtifactNotFound, GTOException

    try:
        entries = gto.api.show(str(root), name)
    except ArtifactNotFound:  # GTO knows an artifact from its tags: no tag yet, no version yet
        return []
    except GTOException as exc:
        raise _gto_error(exc, f"read the versions of {name} in {root}") from None
    found = []
    for entry in entries:
        registration = (entry.get("registrations") or [{}])[-1]
        if not registration.get("tag"):
            continue  # a commit GTO merely discovered: not a version
        found.append(
            VersionEntry(
                version=entry["version"],
                tag=registration["tag"],
                commit=entry["commit_hexsha"],
                created=registration["created_at"].isoformat(),
                message=(registration.get("message") or "").strip(),
                stages=sorted(stage["stage"] for stage in entry.get("stages") or []),
            )
        )
    return found


def next_major(root: Path, name: str) -> str:
    """The version a release registers next: v1.0.0 first, then GTO's major bump of the latest version."""
    import gto.api
    from gto.exceptions import ArtifactNotFound, GTOException
    from gto.versions import SemVer

    try:
        latest = gto.api.find_latest_version(str(root), name)
    except ArtifactNotFound:
        latest = None
    except GTOException as exc:
        raise _gto_error(exc, f"find the latest version of {name}") from None
    if latest is None:
        return FIRST_VERSION
    # gto leaves SemVer.bump unannotated
    return str(SemVer(latest.version).bump(bump_major=True).version)  # type: ignore[no-untyped-call]


def register(root: Path, name: str, commit: str, version: str, message: str) -> str:
    """Tag `commit` as `version` of `name`; the tag's name."""
    import gto.api
    from gto.exceptions import GTOException, TagExists

    try:
        return str(gto.api.register(str(root), name, commit, version=version, message=message).tag)
    except TagExists as exc:
        raise VisError(
            f"{name}@{version} cannot be registered: {exc} (a deregistered version keeps its tag); register "
            f"this commit by hand with a free version: `gto register {name} {commit[:12]} --version vN.0.0`"
        ) from None
    except GTOException as exc:
        raise _gto_error(exc, f"register {commit[:12]} as {name}@{version}") from None


def assign(root: Path, name: str, stage: str, version: str, message: str) -> str:
    """Promote `version` to `stage` (tag NAME#STAGE#N); the tag's name."""
    import gto.api
    from gto.exceptions import GTOException

    try:
        return str(gto.api.assign(str(root), name, stage, version=version, message=message).tag)
    except GTOException as exc:
        raise _gto_error(exc, f"promote {name}@{version} to {stage}") from None


def version_in_stage(root: Path, name: str, stage: str) -> str | None:
    """The version of `name` currently in `stage`, or None."""
    import gto.api
    from gto.exceptions import GTOException

    try:
        found = gto.api.find_versions_in_stage(str(root), name, stage)
    except GTOException as exc:
        raise _gto_error(exc, f"find the version of {name} in stage {stage}") from None
    found = found[0] if isinstance(found, list) and found else found
    return getattr(found, "version", None)
