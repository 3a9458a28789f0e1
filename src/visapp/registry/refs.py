"""What a user may write to name a model version: `yolo@v1.0.0`, `v1.0.0`, `yolo#prod`, or `yolo` (the latest)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from visapp.errors import VisError

ARTIFACT = "yolo"  # the artifact dvc.yaml declares (`artifacts: yolo`)
_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_REF_RE = re.compile(r"^(?:(?P<name>[a-z0-9][a-z0-9-]*[a-z0-9]|[a-z0-9])(?P<sep>[@#]))?(?P<rest>[^@#\s]+)$")
REF_FORMS = "yolo@v1.0.0 (a version), yolo#prod (the version in a stage), v1.0.0, or yolo (the latest version)"


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a version, the version in a promotion stage, or (neither) the latest version."""

    name: str
    version: str | None = None
    stage: str | None = None


def parse_ref(text: str, default_name: str = ARTIFACT) -> ModelRef:
    """ "yolo@v1.0.0", "v1.0.0", "yolo#prod", "yolo" -> ModelRef; anything else -> VisError with the forms."""
    text = text.strip()
    match = _REF_RE.match(text)
    if not match:
        raise VisError(f"{text!r} is not a model version: use {REF_FORMS}")
    name, sep, rest = match.group("name"), match.group("sep"), match.group("rest")
    if sep is None:
        if _VERSION_RE.match(rest):
            return ModelRef(default_name, version=rest)
        return ModelRef(rest)
    if sep == "#":
        return ModelRef(name, stage=rest)
    version = rest if rest.startswith("v") else f"v{rest}"
    if not _VERSION_RE.match(version):
        # GTO only knows full SemVer: a tag such as yolo@v1 is not a version to it.
        raise VisError(f"{text!r} is not a model version: versions are full SemVer, e.g. {name}@v1.0.0")
    return ModelRef(name, version=version)


def semver(version: str) -> tuple[int, ...]:
    """ "v1.2.3" -> (1, 2, 3), for sorting; (0, 0, 0) for anything else."""
    match = _VERSION_RE.match(version)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def is_version(version: str) -> bool:
    """Whether `version` is a model version tag's version: `v1.2.3`."""
    return _VERSION_RE.match(version) is not None
