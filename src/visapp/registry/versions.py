"""Model versions (GTO tags) -> a listing, the version a reference names, its weights, and its lineage.

Everything about a version is read back from the repository at its tag (`visapp.registry.history`: params,
dvc.lock, metrics, dataset metadata, the MLflow run id the train stage recorded) and from the MLflow run of
its training, so the tag alone leads back to the data.

The MLflow run of a training is the one the train stage recorded beside the weights
(`<paths.model>/mlflow_run.json`, committed with dvc.lock), else the run tagged with the version
(`model_version`, set by `visapp release`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from visapp.config import flatten
from visapp.errors import VisError
from visapp.fsio import atomic_path
from visapp.integrations import dvc, git, gto
from visapp.registry.history import Snapshot, snapshot
from visapp.registry.refs import ARTIFACT, ModelRef, is_version, parse_ref, semver
from visapp.training import tracking

TAG_MODEL_VERSION = "model_version"  # MLflow run tag set by `release`


# --- listing and resolving ------------------------------------------------------------------------------------


def version_tags(root: Path, name: str = ARTIFACT) -> dict[str, str]:
    """Full-SemVer version tags of `name` -> the commit each points at (deregistered ones too)."""
    tags = git.tag_targets(root, f"{name}@v*")
    return {tag: sha for tag, sha in tags.items() if is_version(tag.split("@", 1)[1])}


class VersionRow(TypedDict):
    """A registered version of an artifact, as `visapp models --json` lists it."""

    name: str
    version: str
    tag: str
    commit: str
    created: str  # ISO 8601
    message: str
    stages: list[str]


def list_versions(root: str | Path = ".", name: str = ARTIFACT) -> list[VersionRow]:
    """Every registered version, newest first: version, tag, commit, stages, created (ISO 8601), message."""
    rows = [
        VersionRow(
            name=name,
            version=entry.version,
            tag=entry.tag,
            commit=entry.commit,
            created=entry.created,
            message=entry.message,
            stages=entry.stages,
        )
        for entry in gto.versions(Path(root).resolve(), name)
    ]
    return sorted(rows, key=lambda row: semver(row["version"]), reverse=True)


def promotions_without_versions(root: str | Path = ".", name: str = ARTIFACT) -> list[str]:
    """Promotion tags (`yolo#prod#1`) on commits that hold no version tag here: the version tag was not fetched."""
    root = Path(root).resolve()
    versioned = set(version_tags(root, name).values())
    return sorted(tag for tag, sha in git.tag_targets(root, f"{name}#*").items() if sha not in versioned)


def format_versions(rows: list[VersionRow], orphans: list[str] | None = None) -> str:
    """A table of the versions, newest first; a note for promotion tags whose version tags are missing here."""
    note = (
        f"promotion tags {', '.join(orphans)} name versions whose tags are not in this repository: fetch them with "
        "`git fetch --tags` (a push of a promotion tag alone leaves its version tag behind)"
        if orphans
        else ""
    )
    if not rows:
        empty = f"no model versions yet: train (`dvc repro`), commit, then `visapp release` (artifact {ARTIFACT!r})"
        return note or empty
    table = [("version", "tag", "commit", "stages", "summary")]
    for row in rows:
        summary = row["message"].splitlines()[0] if row["message"] else ""
        table.append((row["version"], row["tag"], row["commit"][:12], ",".join(row["stages"]) or "-", summary))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    text = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
    )
    return f"{text}\n{note}" if note else text


@dataclass(frozen=True)
class Resolved:
    """A registered model version: artifact name, version, its GTO tag, and the commit the tag points at."""

    name: str
    version: str
    tag: str
    commit: str


def resolve(root: str | Path, ref: str | ModelRef) -> Resolved:
    """A reference -> the registered version it names (VisError naming what is missing and how to get it)."""
    root = Path(root).resolve()
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    tags = version_tags(root, ref.name)
    version = ref.version
    if ref.stage:
        version = gto.version_in_stage(root, ref.name, ref.stage)
        if not version:
            raise VisError(f"no version of {ref.name} is in stage {ref.stage!r}: `visapp models` lists the stages")
    elif not version:
        if not tags:
            raise VisError(f"{ref.name} has no versions yet: `visapp release` makes the first one")
        version = max((tag.split("@", 1)[1] for tag in tags), key=semver)
    tag = f"{ref.name}@{version}"
    if tag not in tags:
        known = ", ".join(sorted(tags, key=lambda t: semver(t.split("@", 1)[1]))) or "none"
        via = f" (stage {ref.stage!r} points at it)" if ref.stage else ""
        raise VisError(
            f"no tag {tag}{via} in {root} (versions here: {known}): fetch it with `git fetch origin tag {tag}`, "
            "or `git fetch --tags`"
        )
    return Resolved(ref.name, version, tag, tags[tag])


# --- weights ---------------------------------------------------------------------------------------------------


def get_model(root: str | Path, ref: str, out: str | Path, force: bool = False) -> Path:
    """Write the weights of a version to `out` (a file, or a folder to put them in) without touching the workspace.

    Through `dvc artifacts` (the artifact's path at the version's commit, then the DVC cache or the remote).
    """
    root = Path(root).resolve()
    found = resolve(root, ref)
    out = Path(out)
    if out.is_dir():
        with snapshot(root, found.commit) as snap:
            out = out / Path(snap.artifact_path(found.name)).name
    if out.exists() and not force:
        raise VisError(f"{out} exists: choose another -o, or add --force to overwrite it")
    with atomic_path(out) as tmp:
        dvc.download_artifact(root, found.name, found.version, tmp)
    return out


# --- MLflow ----------------------------------------------------------------------------------------------------


@dataclass
class Tracking:
    """Where the runs of a commit's training are (the same resolution the train stage uses)."""

    uri: str
    experiment: str
    required: bool
    problem: str | None = None  # why it cannot be used, when it cannot


def tracking_for(root: Path, snap: Snapshot) -> Tracking:
    """Where a commit's training was tracked, seen from `root` (with the problem, when that store cannot be read)."""
    config = snap.tracking()
    uri = _local_uri(root, tracking.resolve_uri(config))
    found = Tracking(uri, config.experiment, config.required)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # A fresh clone has no local store: querying it would only create an empty one.
        found.problem = f"no local MLflow store {uri} here (set MLFLOW_TRACKING_URI to the server the runs are on)"
        return found
    try:
        tracking.check_reachable(uri)
    except VisError as exc:
        found.problem = str(exc).split(" (checked", 1)[0]
    return found


def _local_uri(root: Path, uri: str) -> str:
    """A relative sqlite URI is relative to the repository root (where DVC ran the stage), not to our cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def find_run(snap: Snapshot, track: Tracking, tag: str | None = None) -> str | None:
    """The MLflow run id of the training whose weights the snapshot's commit pins (module docstring)."""
    run_id = snap.run_id()
    if run_id or track.problem or not tag:
        return run_id
    client = tracking.client_for(track.uri)
    experiment = client.get_experiment_by_name(track.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.{TAG_MODEL_VERSION} = '{tag}'",
        order_by=["attributes.end_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


# --- lineage ---------------------------------------------------------------------------------------------------


def lineage(root: str | Path, ref: str) -> dict[str, Any]:
    """A version -> its commit, weights, raw data hash, dataset fingerprint, params, metrics and MLflow run."""
    root = Path(root).resolve()
    found = resolve(root, ref)
    with snapshot(root, found.commit) as snap:
        weights_path = snap.artifact_path(found.name)
        pinned = snap.pinning_stage(weights_path)
        metadata = snap.metadata()
        try:
            weights_md5, md5_problem = snap.revision.md5(weights_path), None
        except VisError as exc:  # the folder's listing is neither cached nor in the remote: say so, show the rest
            weights_md5, md5_problem = None, str(exc)
        track = tracking_for(root, snap)
        info: dict[str, Any] = {
            "artifact": found.name,
            "version": found.version,
            "tag": found.tag,
            "stages": next((row["stages"] for row in list_versions(root, found.name) if row["tag"] == found.tag), []),
            "commit": found.commit,
            "weights": {
                "path": weights_path,
                "md5": weights_md5,
                "md5_problem": md5_problem,
                "stage": pinned[0] if pinned else None,
                "stage_out_md5": (pinned[1].get("md5") if pinned else None),
            },
            "data": {
                "raw_path": str(snap.param("paths.raw")),
                "raw_dvc_hash": snap.raw_dvc_hash(),
                "metadata_raw_dvc_hash": metadata.get("raw_dvc_hash"),
                "fingerprint": metadata.get("fingerprint"),
            },
            "params": flatten(snap.params()),
            "metrics": snap.metrics(),
            "mlflow": {
                "run_id": find_run(snap, track, tag=found.tag),
                "tracking_uri": track.uri,
                "experiment": track.experiment,
            },
        }
    return info


def format_lineage(info: dict[str, Any]) -> str:
    """A readable, top-down account: version -> commit -> weights -> data -> params -> metrics -> MLflow."""
    lines = [
        f"{info['tag']}" + (f"  (stages: {', '.join(info['stages'])})" if info["stages"] else ""),
        f"  commit:              {info['commit']}",
        f"  weights:             {info['weights']['path']} (md5 {info['weights']['md5']}, "
        f"output of stage {info['weights']['stage']})",
        f"  raw data:            {info['data']['raw_path']} (dvc md5 {info['data']['raw_dvc_hash']})",
        f"  dataset fingerprint: {info['data']['fingerprint']}",
        f"  mlflow run:          {info['mlflow']['run_id'] or 'not found'} ({info['mlflow']['tracking_uri']}, "
        f"experiment {info['mlflow']['experiment']!r})",
        "  metrics:",
        *(f"    {key}: {value}" for key, value in sorted(info["metrics"].items())),
        "  params:",
        *(f"    {key}: {json.dumps(value)}" for key, value in sorted(info["params"].items())),
    ]
    return "\n".join(lines)
