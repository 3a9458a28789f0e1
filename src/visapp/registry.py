"""A committed, up-to-date pipeline -> GTO model versions (`yolo@vN.0.0`, `yolo#stage#N`): release, list, get, lineage.

A version is an annotated Git tag on the commit whose `dvc.lock` pins the weights; its message holds the
metrics and the dataset fingerprint. Everything else about a version is read back from the repository at
that tag (dvc.lock, params.yaml, metrics.json, dataset_metadata.json) and from the MLflow run of its
training, so the tag alone leads back to the data.

The MLflow run of a training is found, in this order: the run id the train stage wrote beside the weights
(`<paths.model>/mlflow_run.json`, when present), the run already tagged with the version (`model_version`),
and the finished run whose `checkpoint_key` tag matches the version's params and data (the train stage's key).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp.errors import VisError

ARTIFACT = "yolo"
RUN_FILE = "mlflow_run.json"  # {"run_id": ...} beside metrics.json, when the train stage writes it
TAG_MODEL_VERSION = "model_version"  # MLflow run tag set by `release`
METRICS_FILE = "metrics.json"
METADATA_FILE = "dataset_metadata.json"
HEADLINE_METRICS = ("mAP50", "mAP50-95", "precision", "recall")
_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_REF_RE = re.compile(r"^(?:(?P<name>[a-z0-9][a-z0-9-]*[a-z0-9]|[a-z0-9])(?P<sep>[@#]))?(?P<rest>[^@#\s]+)$")
REF_FORMS = "yolo@v1.0.0 (a version), yolo#prod (the version in a stage), v1.0.0, or yolo (the latest version)"


# --- references ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a version, the version in a stage, or (neither) the latest version."""

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


# --- git ------------------------------------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise VisError("git is not installed or not on PATH: install git") from None
    if check and proc.returncode != 0:
        raise VisError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _head(root: Path) -> str:
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip()
    if not head:
        raise VisError(f"{root} has no commit yet: commit the trained pipeline (dvc.lock), then release")
    return head


def _show(root: Path, rev: str, path: str) -> str | None:
    """A Git-tracked file's text at `rev`, or None when it is not there."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def version_tags(root: Path, name: str = ARTIFACT) -> dict[str, str]:
    """Full-SemVer version tags of `name` -> the commit each points at."""
    out = _git(root, "for-each-ref", "--format=%(refname:short) %(*objectname) %(objectname)", f"refs/tags/{name}@v*")
    tags = {}
    for line in out.splitlines():
        tag, *shas = line.split()
        if _VERSION_RE.match(tag.split("@", 1)[1]):
            tags[tag] = shas[0]  # annotated: the peeled commit; lightweight tags have only one sha
    return tags


def _major(tag: str) -> int:
    match = _VERSION_RE.match(tag.split("@", 1)[1])
    return int(match.group(1)) if match else 0


def next_version(root: Path, name: str = ARTIFACT) -> str:
    """v(N+1).0.0 where N is the highest major version ever tagged (deregistered ones too: never reuse one)."""
    return f"v{max((_major(tag) for tag in version_tags(root, name)), default=0) + 1}.0.0"


# --- reading a revision ---------------------------------------------------------------------------------------


def _yaml(text: str | None) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(text) or {}) if text else {}


def artifact_path(root: Path, rev: str, name: str = ARTIFACT) -> str:
    """The artifact's path as declared in dvc.yaml `artifacts:` at `rev`."""
    artifacts = _yaml(_show(root, rev, "dvc.yaml")).get("artifacts") or {}
    if name not in artifacts or not artifacts[name].get("path"):
        raise VisError(
            f"dvc.yaml at {rev[:12]} declares no artifact {name!r}: add `artifacts: {{{name}: {{path: "
            f"models/yolo/weights/best.pt, type: model}}}}` to dvc.yaml (the train stage's weights)"
        )
    return str(artifacts[name]["path"])


def pinning_stage(root: Path, rev: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """(stage name, dvc.lock out entry) of the stage output that holds `path` at `rev`, or None."""
    lock = _yaml(_show(root, rev, "dvc.lock"))
    for stage, entry in sorted((lock.get("stages") or {}).items()):
        for out in entry.get("outs") or []:
            out_path = str(out.get("path", "")).rstrip("/")
            if path == out_path or path.startswith(f"{out_path}/"):
                return stage, out
    return None


def read_params(root: Path, rev: str) -> dict[str, Any]:
    """params.yaml at `rev` (Git-tracked)."""
    params = _yaml(_show(root, rev, "params.yaml"))
    if not params:
        raise VisError(f"params.yaml is missing at {rev[:12]}: not a VIS pipeline commit")
    return params


def read_output(root: Path, rev: str, path: str) -> str:
    """A pipeline output's text at `rev`: from Git when committed there, else through DVC (cache, then remote)."""
    text = _show(root, rev, path)
    if text is not None:
        return text
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(root), rev=rev)
    except Exception as exc:  # DVC's own errors say what is missing; add what to do
        raise VisError(
            f"cannot read {path} at {rev[:12]} ({type(exc).__name__}: {exc}): it is neither in the local DVC "
            f"cache nor in the remote; `dvc push` from where it was trained, or check the remote settings"
        ) from None


def _model_dir(params: dict[str, Any]) -> str:
    return str((params.get("paths") or {}).get("model") or "models/yolo")


def _metadata_dir(params: dict[str, Any]) -> str:
    return str((params.get("paths") or {}).get("metadata") or "data/metadata")


# --- MLflow ---------------------------------------------------------------------------------------------------


@dataclass
class Tracking:
    """Where the runs of this repository are (the same resolution the train stage uses)."""

    uri: str
    experiment: str
    required: bool
    problem: str | None = None  # why it cannot be used, when it cannot


def tracking_for(root: Path, params: dict[str, Any]) -> Tracking:
    from visapp import tracking
    from visapp.config import to_params

    typed = to_params(params).tracking
    uri = tracking.resolve_uri(typed)
    found = Tracking(uri, typed.experiment, typed.required)
    if uri.startswith("sqlite:///") and not (root / uri.removeprefix("sqlite:///")).is_file():
        # A fresh clone has no local store: querying it would only create an empty one.
        found.problem = f"no local MLflow store {uri} here (set MLFLOW_TRACKING_URI to the server the runs are on)"
        return found
    try:
        tracking.check_reachable(uri)
    except VisError as exc:
        found.problem = str(exc).split(" (checked", 1)[0]
    return found


def _mlflow_uri(root: Path, uri: str) -> str:
    """A relative sqlite URI is relative to the repository root (where DVC ran the stage), not to our cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def find_run(root: Path, rev: str, params: dict[str, Any], track: Tracking, tag: str | None = None) -> str | None:
    """The MLflow run id of the training whose weights `rev` pins (module docstring: the order tried)."""
    run_file = _show(root, rev, f"{_model_dir(params)}/{RUN_FILE}")
    if run_file is None:
        try:
            run_file = read_output(root, rev, f"{_model_dir(params)}/{RUN_FILE}")
        except VisError:
            run_file = None
    if run_file:
        run_id = json.loads(run_file).get("run_id")
        if run_id:
            return str(run_id)
    if track.problem:
        return None
    from visapp.tracking import client_for

    client = client_for(_mlflow_uri(root, track.uri))
    experiment = client.get_experiment_by_name(track.experiment)
    if experiment is None:
        return None
    filters = [f"tags.{TAG_MODEL_VERSION} = '{tag}'"] if tag else []
    key = _checkpoint_key(root, rev, params)
    if key:
        filters.append(f"tags.checkpoint_key = '{key}' and attributes.status = 'FINISHED'")
    for filter_string in filters:
        runs = client.search_runs(
            [experiment.experiment_id], filter_string, order_by=["attributes.end_time DESC"], max_results=1
        )
        if runs:
            return runs[0].info.run_id
    return None


def _checkpoint_key(root: Path, rev: str, params: dict[str, Any]) -> str | None:
    """The train stage's key (params + dataset fingerprint) of the training at `rev`."""
    from visapp.config import to_params
    from visapp.train import checkpoint_key

    metadata = json.loads(read_output(root, rev, f"{_metadata_dir(params)}/{METADATA_FILE}"))
    return checkpoint_key(to_params(params), metadata["fingerprint"]) if metadata.get("fingerprint") else None


def tag_run(root: Path, track: Tracking, run_id: str, tags: dict[str, str]) -> None:
    from visapp.tracking import client_for

    client = client_for(_mlflow_uri(root, track.uri))
    for key, value in sorted(tags.items()):
        client.set_tag(run_id, key, value)


# --- release --------------------------------------------------------------------------------------------------


def workspace_problems(root: Path) -> list[str]:
    """Why HEAD is not what the workspace holds: uncommitted files, then stale or missing pipeline outputs."""
    problems = []
    dirty = [line for line in _git(root, "status", "--porcelain", "--untracked-files=normal").splitlines() if line]
    if dirty:
        shown = ", ".join(line[3:] for line in dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        problems.append(
            f"the workspace has uncommitted changes ({shown}): a version is a tag on a commit, so commit them "
            f"(`git add -A && git commit`, or `dvc exp apply`/`dvc exp branch` for an experiment's results) "
            f"or discard them, then release again"
        )
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    if status:
        stale = ", ".join(f"{name} ({_status_words(changes)})" for name, changes in sorted(status.items()))
        tracked = [name.removesuffix(".dvc") for name in sorted(status) if name.endswith(".dvc")]
        data_hint = (
            f"`dvc add {' '.join(tracked)}` to keep the changed data (or `dvc checkout` to undo it), then "
            if tracked
            else ""
        )
        problems.append(
            f"the pipeline is not up to date: {stale}; {data_hint}run `dvc repro` (or `dvc pull` when the outputs "
            f"are in the remote), commit dvc.lock (`git add -A && git commit`), then release again"
        )
    return problems


def _status_words(changes: list[Any]) -> str:
    """DVC's status entries -> "changed deps: params.yaml (train: modified), data/raw (modified)"."""

    def item(path: str, state: Any) -> str:
        if isinstance(state, dict):
            return f"{path} ({', '.join(f'{key}: {value}' for key, value in sorted(state.items()))})"
        return f"{path} ({state})"

    words = []
    for change in changes:
        if isinstance(change, dict):
            for kind, detail in change.items():
                if isinstance(detail, dict):
                    words.append(f"{kind}: {', '.join(item(p, st) for p, st in sorted(detail.items()))}")
                else:
                    words.append(str(kind))
        else:
            words.append(str(change))
    return "; ".join(words)


@dataclass
class Release:
    """What `release` did: the version tag, the stage tag, the run it tagged, what it pushed."""

    name: str
    version: str
    tag: str
    commit: str
    message: str
    stage_tag: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    new: bool = True  # False: the version existed, only a stage was assigned

    def __str__(self) -> str:
        verb = "released" if self.new else "already released:"
        lines = [f"{verb} {self.tag} on commit {self.commit[:12]}"]
        if self.stage_tag:
            lines.append(f"assigned stage: {self.stage_tag}")
        lines.append(f"MLflow run: {self.run_id}" if self.run_id else "MLflow run: not found")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"get it back: `git checkout {self.tag} && dvc pull` or `visapp model get {self.tag} -o best.pt`")
        return "\n".join(lines)


def tag_message(name: str, version: str, metrics: dict[str, Any], metadata: dict[str, Any], run_id: str | None) -> str:
    """The annotated tag's message: a headline, then `key: value` lines (metrics as JSON)."""
    headline = ", ".join(f"{key} {metrics[key]:.4f}" for key in HEADLINE_METRICS if key in metrics)
    lines = [
        f"{name} {version}: {headline}" if headline else f"{name} {version}",
        "",
        f"metrics: {json.dumps(metrics, sort_keys=True)}",
        f"dataset_fingerprint: {metadata.get('fingerprint')}",
        f"raw_dvc_hash: {metadata.get('raw_dvc_hash')}",
    ]
    if run_id:
        lines.append(f"mlflow_run_id: {run_id}")
    return "\n".join(lines) + "\n"


def _existing_version(root: Path, name: str, commit: str, path: str) -> str | None:
    """The version already tagged on `commit`, else one whose dvc.lock pins the same weights (same hash)."""
    tags = sorted(version_tags(root, name).items(), key=lambda item: _semver(item[0].split("@", 1)[1]))
    at_commit = next((tag for tag, sha in tags if sha == commit), None)
    if at_commit:
        return at_commit
    pinned = pinning_stage(root, commit, path)
    weights = pinned[1].get("md5") if pinned else None
    for tag, sha in tags:
        other = pinning_stage(root, sha, path)
        if weights and other and other[1].get("md5") == weights:
            return tag
    return None


def release(root: str | Path = ".", stage: str | None = None, push: bool = False, name: str = ARTIFACT) -> Release:
    """Register HEAD's trained model as the next major version; optionally assign a stage and push.

    Refuses (VisError, nothing tagged) a dirty workspace, a stale pipeline, a commit whose dvc.lock pins no
    weights, an already released commit (unless only a stage is asked for), and an unreachable required
    tracking server. With `push`, the outputs go to the DVC remote before any tag is made, then the tags go
    to `origin` when there is one.
    """
    import gto.api

    root = Path(root).resolve()
    commit = _head(root)
    problems = workspace_problems(root)
    if problems:
        raise VisError("cannot release: " + "; and ".join(problems))
    path = artifact_path(root, commit, name)
    if pinning_stage(root, commit, path) is None:
        raise VisError(
            f"dvc.lock at HEAD pins no {path}: run `dvc repro` to train, commit dvc.lock, then release again"
        )
    existing = _existing_version(root, name, commit, path)
    if existing and not stage:
        how = (
            "HEAD is already released as"
            if version_tags(root, name)[existing] == commit
            else ("the weights dvc.lock pins at HEAD are already released as")
        )
        raise VisError(
            f"{how} {existing}: train a new model (`dvc repro` or `dvc exp run`) and commit it for a new "
            f"version, or promote this one with `visapp release --stage prod`"
        )
    params = read_params(root, commit)
    metrics = json.loads(read_output(root, commit, f"{_model_dir(params)}/{METRICS_FILE}"))
    metadata = json.loads(read_output(root, commit, f"{_metadata_dir(params)}/{METADATA_FILE}"))
    track = tracking_for(root, params)
    if track.problem and track.required and track.uri.lower().startswith(("http://", "https://")):
        raise VisError(
            f"cannot release: {track.problem}; the release tags the training's MLflow run: start the server or "
            f"point MLFLOW_TRACKING_URI at the one that holds the run"
        )
    run_id = find_run(root, commit, params, track)
    notes = []
    if push:
        from visapp import remote

        pushed = remote.push(root)
        notes.append(f"dvc push: {pushed} files pushed to {remote.remote_info(root)}")

    if existing:
        version, tag, message = existing.split("@", 1)[1], existing, ""
        commit = version_tags(root, name)[existing]
    else:
        version = next_version(root, name)
        message = tag_message(name, version, metrics, metadata, run_id)
        tag = gto.api.register(str(root), name, commit, version=version, message=message).tag
    stage_tag = None
    if stage:
        stage_tag = gto.api.assign(str(root), name, stage, version=version, message=f"{name} {version} -> {stage}").tag
    if track.problem:
        notes.append(f"MLflow run not tagged: {track.problem}")
    elif not run_id:
        notes.append(f"no MLflow run of this training found at {track.uri} (experiment {track.experiment!r})")
    else:
        try:
            tag_run(root, track, run_id, {TAG_MODEL_VERSION: tag})
        except Exception as exc:  # the tags are made: say what is missing rather than fail half-way
            notes.append(f"MLflow run {run_id} not tagged at {track.uri}: {str(exc).splitlines()[0]}")
    if push:
        notes.append(_push_tags(root, [t for t in (tag, stage_tag) if t and t != existing]))
    return Release(name, version, tag, commit, message, stage_tag, run_id, notes, new=not existing)


def _push_tags(root: Path, tags: list[str]) -> str:
    if not tags:
        return "no new tags to push"
    if not _git(root, "remote", check=False).split():
        return f"no Git remote: push the tags yourself (`git push <remote> {' '.join(tags)}`)"
    remote = "origin" if "origin" in _git(root, "remote").split() else _git(root, "remote").split()[0]
    _git(root, "push", remote, *tags)
    return f"pushed {', '.join(tags)} to {remote}"


# --- listing, getting, lineage ------------------------------------------------------------------------------


def list_versions(root: str | Path = ".", name: str = ARTIFACT) -> list[dict[str, Any]]:
    """Every registered version, newest first: version, tag, commit, stages, created (ISO 8601), message."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    root = Path(root).resolve()
    try:
        entries = gto.api.show(str(root), name)
    except ArtifactNotFound:  # GTO knows an artifact from its tags: no tag yet, no version yet
        return []
    rows = []
    for entry in entries:
        registration = (entry.get("registrations") or [{}])[-1]
        if not registration.get("tag"):
            continue  # a commit GTO merely discovered: not a version
        rows.append(
            {
                "name": name,
                "version": entry["version"],
                "tag": registration["tag"],
                "commit": entry["commit_hexsha"],
                "stages": sorted(stage["stage"] for stage in entry.get("stages") or []),
                "created": registration["created_at"].isoformat(),
                "message": (registration.get("message") or "").strip(),
            }
        )
    return sorted(rows, key=lambda row: _semver(row["version"]), reverse=True)


def _semver(version: str) -> tuple[int, ...]:
    match = _VERSION_RE.match(version)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def format_versions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"no model versions yet: train (`dvc repro`), commit, then `visapp release` (artifact {ARTIFACT!r})"
    table = [("version", "tag", "commit", "stages", "summary")]
    for row in rows:
        summary = row["message"].splitlines()[0] if row["message"] else ""
        table.append((row["version"], row["tag"], row["commit"][:12], ",".join(row["stages"]) or "-", summary))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
    )


@dataclass(frozen=True)
class Resolved:
    name: str
    version: str
    tag: str
    commit: str


def resolve(root: str | Path, ref: str | ModelRef) -> Resolved:
    """A reference -> the registered version it names (VisError listing the versions when there is none)."""
    import gto.api

    root = Path(root).resolve()
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    tags = version_tags(root, ref.name)
    version = ref.version
    if ref.stage:
        found = gto.api.find_versions_in_stage(str(root), ref.name, ref.stage)
        found = found[0] if isinstance(found, list) and found else found
        version = getattr(found, "version", None)
        if not version:
            raise VisError(f"no version of {ref.name} is in stage {ref.stage!r}: `visapp models` lists the stages")
    elif not version:
        if not tags:
            raise VisError(f"{ref.name} has no versions yet: `visapp release` makes the first one")
        version = max((tag.split("@", 1)[1] for tag in tags), key=_semver)
    tag = f"{ref.name}@{version}"
    if tag not in tags:
        known = ", ".join(sorted(tags, key=lambda t: _semver(t.split("@", 1)[1]))) or "none"
        raise VisError(f"no model version {tag} in {root} (versions: {known}); `git fetch --tags` if it is on a remote")
    return Resolved(ref.name, version, tag, tags[tag])


def get_model(root: str | Path, ref: str, out: str | Path, force: bool = False) -> Path:
    """Write the weights of a version to `out` (a file, or a folder to put them in) without touching the workspace.

    Through `dvc artifacts` (the artifact's path at the version's commit, then the DVC cache or the remote).
    """
    from dvc.repo import Repo

    root = Path(root).resolve()
    found = resolve(root, ref)
    out = Path(out)
    if out.is_dir():
        out = out / Path(artifact_path(root, found.commit, found.name)).name
    if out.exists() and not force:
        raise VisError(f"{out} exists: choose another -o, or add --force to overwrite it")
    from visapp.fsio import atomic_path

    with atomic_path(out) as tmp, Repo(str(root)) as repo:
        try:
            repo.artifacts.download(found.name, version=found.version, out=str(tmp))
        except Exception as exc:
            raise VisError(
                f"cannot get {found.tag}: {exc}; its weights must be in the DVC cache or the remote "
                f"(`dvc push` where it was trained; check `dvc remote list` and the credentials)"
            ) from None
    return out


def lineage(root: str | Path, ref: str) -> dict[str, Any]:
    """A version -> its commit, weights, raw data hash, dataset fingerprint, params, metrics and MLflow run."""
    from visapp.config import flatten

    root = Path(root).resolve()
    found = resolve(root, ref)
    rev = found.commit
    params = read_params(root, rev)
    weights_path = artifact_path(root, rev, found.name)
    pinned = pinning_stage(root, rev, weights_path)
    metadata = json.loads(read_output(root, rev, f"{_metadata_dir(params)}/{METADATA_FILE}"))
    metrics = json.loads(read_output(root, rev, f"{_model_dir(params)}/{METRICS_FILE}"))
    raw_path = str((params.get("paths") or {}).get("raw") or "data/raw")
    raw_dvc = _yaml(_show(root, rev, f"{raw_path}.dvc"))
    raw_hash = next((out.get("md5") for out in raw_dvc.get("outs") or [] if out.get("md5")), None)
    track = tracking_for(root, params)
    run_id = find_run(root, rev, params, track, tag=found.tag)
    stages = next((row["stages"] for row in list_versions(root, found.name) if row["tag"] == found.tag), [])
    return {
        "artifact": found.name,
        "version": found.version,
        "tag": found.tag,
        "stages": stages,
        "commit": rev,
        "weights": {
            "path": weights_path,
            "md5": _file_md5(root, rev, weights_path),
            "stage": pinned[0] if pinned else None,
            "stage_out_md5": (pinned[1].get("md5") if pinned else None),
        },
        "data": {
            "raw_path": raw_path,
            "raw_dvc_hash": raw_hash,
            "metadata_raw_dvc_hash": metadata.get("raw_dvc_hash"),
            "fingerprint": metadata.get("fingerprint"),
        },
        "params": flatten(params),
        "metrics": metrics,
        "mlflow": {"run_id": run_id, "tracking_uri": track.uri, "experiment": track.experiment},
    }


def _file_md5(root: Path, rev: str, path: str) -> str | None:
    """The md5 DVC recorded for a file at `rev` (inside a tracked folder too), without downloading it."""
    from dvc.api import DVCFileSystem

    try:
        return DVCFileSystem(str(root), rev=rev).info(path).get("md5")
    except Exception:  # a folder manifest neither cached nor in the remote: lineage still has the rest
        return None


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
