"""A committed, up-to-date pipeline -> the next model version (`yolo@vN.0.0`), optionally promoted and pushed.

A version is an annotated Git tag (GTO) on the commit whose `dvc.lock` pins the weights; its message holds the
metrics and the dataset fingerprint. The training's MLflow run is tagged with the version. A promotion to a
stage (`yolo#prod#N`) is a tag of its own; "stage" here always means such a promotion stage, not a DVC stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp import composition
from visapp.config import CONF_DIR, PARAMS_FILE, read_params_file
from visapp.errors import VisError
from visapp.integrations import dvc, git, gto
from visapp.registry import remote
from visapp.registry.history import Snapshot, snapshot
from visapp.registry.refs import ARTIFACT, semver
from visapp.registry.versions import TAG_MODEL_VERSION, Tracking, find_run, tracking_for, version_tags
from visapp.training import tracking

HEADLINE_METRICS = ("mAP50", "mAP50-95", "precision", "recall")
HEADLINE = "mAP50-95"  # the metric a new version is compared on with the previous one


def workspace_problems(root: Path) -> list[str]:
    """Why HEAD cannot be released: uncommitted files, a params.yaml that conf/ does not give, a stale pipeline."""
    problems = []
    dirty = git.changed_files(root)
    if dirty:
        shown = ", ".join(line[3:] for line in dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        problems.append(
            f"the workspace has uncommitted changes ({shown}): a version is a tag on a commit, so commit them "
            f"(`git add -A && git commit`, or `dvc exp apply`/`dvc exp branch` for an experiment's results) "
            f"or discard them, then release again"
        )
    differences = composition.diff(read_params_file(root / PARAMS_FILE), composition.compose(root / CONF_DIR))
    if differences:
        problems.append(
            f"params.yaml disagrees with conf/ ({composition.describe(differences)}): the release would hold a "
            f"conf/ that does not describe its model; {composition.FIX}"
        )
    status = dvc.pipeline_status(root)
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
    """What `release` did: the version tag, the promotion tag, the run it tagged, what it pushed."""

    name: str
    version: str
    tag: str
    commit: str
    message: str
    promotion_tag: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    new: bool = True  # False: the version existed, only a promotion was made

    def __str__(self) -> str:
        verb = "released" if self.new else "already released:"
        lines = [f"{verb} {self.tag} on commit {self.commit[:12]}"]
        if self.promotion_tag:
            lines.append(f"promoted: {self.promotion_tag}")
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


def _existing_version(root: Path, name: str, head: Snapshot, path: str) -> str | None:
    """The version already tagged on HEAD, else one whose dvc.lock pins the same weights (same hash)."""
    tags = sorted(version_tags(root, name).items(), key=lambda item: semver(item[0].split("@", 1)[1]))
    at_commit = next((tag for tag, sha in tags if sha == head.commit), None)
    if at_commit:
        return at_commit
    pinned = head.pinning_stage(path)
    weights = pinned[1].get("md5") if pinned else None
    if not weights:
        return None
    for tag, sha in tags:
        with snapshot(root, sha) as other:
            found = other.pinning_stage(path)
        if found and found[1].get("md5") == weights:
            return tag
    return None


def _promotion_hint(root: Path, name: str, tag: str) -> str:
    stages = next((entry.stages for entry in gto.versions(root, name) if entry.tag == tag), [])
    if stages:
        return f"promote it to another stage with `visapp release --stage NAME` (it is in {', '.join(stages)} already)"
    return "promote it with `visapp release --stage prod`"


def _metrics_of(message: str) -> dict[str, Any]:
    """The metrics a version's tag message records (the `metrics: {...}` line), or {}."""
    line = next((line for line in message.splitlines() if line.startswith("metrics: ")), "")
    try:
        found = json.loads(line.removeprefix("metrics: ")) if line else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _compare_with_previous(root: Path, name: str, version: str, metrics: dict[str, Any]) -> str | None:
    """A warning when the new version is worse than the latest earlier one on the headline metric."""
    earlier = [entry for entry in gto.versions(root, name) if semver(entry.version) < semver(version)]
    if not earlier or HEADLINE not in metrics:
        return None
    previous = max(earlier, key=lambda entry: semver(entry.version))
    before = _metrics_of(previous.message).get(HEADLINE)
    if not isinstance(before, int | float) or metrics[HEADLINE] >= before:
        return None
    return (
        f"warning: {HEADLINE} {metrics[HEADLINE]:.4f} is below {previous.tag}'s {before:.4f}: this version is worse "
        f"than the previous one on the headline metric (compare them with `visapp lineage`)"
    )


def _push_tags(root: Path, tags: list[str]) -> str:
    if not tags:
        return "no new tags to push"
    names = git.remotes(root)
    if not names:
        return f"no Git remote: push the tags yourself (`git push <remote> {' '.join(tags)}`)"
    target = "origin" if "origin" in names else names[0]
    git.push_tags(root, target, tags)
    return f"pushed {', '.join(tags)} to {target}"


def _tag_run(track: Tracking, run_id: str, tag: str, commit: str) -> str | None:
    """Tag the training's MLflow run with its version and the commit that holds it; a note when that cannot be done
    (the Git tags stand)."""
    if track.problem:
        return f"MLflow run not tagged: {track.problem}"
    try:
        client = tracking.client_for(track.uri)
        client.set_tag(run_id, TAG_MODEL_VERSION, tag)
        client.set_tag(run_id, tracking.TAG_RELEASED_COMMIT, commit)
    except Exception as exc:  # the Git tags are made: say what is missing rather than fail half-way
        return f"MLflow run {run_id} not tagged at {track.uri}: {str(exc).splitlines()[0]}"
    return None


GATED_STAGE = "prod"  # a promotion to this stage passes the gate (`visapp.registry.gate`)


def _gate(root: Path, name: str, candidate: str, force: bool, reason: str | None) -> tuple[str | None, str]:
    """The gate of a promotion to prod: the candidate (`workspace`, or a released version) against the version
    in prod, on the current test split. Returns (what goes in the tag's message, the table shown); raises
    VisError when the candidate loses more than `release.*` allows and `force` is not given."""
    from visapp.composition import applicable_params
    from visapp.registry.gate import compare_models, format_compared, refusals

    current = gto.version_in_stage(root, name, GATED_STAGE) if version_tags(root, name) else None
    if current is None:
        return None, f"no version is in {GATED_STAGE} yet: nothing to compare with"
    current_tag = f"{name}@{current}" if "@" not in current else current
    if candidate == current_tag:
        return None, f"{candidate} is in {GATED_STAGE} already"
    params = applicable_params(root)
    compared = compare_models(root, params, current_tag, candidate)
    table = format_compared(compared)
    problems = refusals(compared, params.release)
    if not problems:
        return f"gate: passed against {current_tag} on the {compared.first.split} split", table
    if not force:
        raise VisError(
            f"refused: the candidate is worse than {current_tag} (in {GATED_STAGE}) on the current "
            f"{compared.first.split} split: " + "; ".join(problems) + "\n" + table + "\nrelease it anyway with "
            '`visapp release --stage prod --force --reason "..."`, or change release.* in conf/'
        )
    if not reason or not reason.strip():
        raise VisError('--force needs --reason "..." (why a worse model goes to prod: it is kept in the tag)')
    return f"gate: forced past {current_tag} ({'; '.join(problems)}); reason: {reason.strip()}", table


def release(
    root: str | Path = ".",
    stage: str | None = None,
    push: bool = False,
    name: str = ARTIFACT,
    force: bool = False,
    reason: str | None = None,
) -> Release:
    """Register HEAD's trained model as the next major version; optionally promote it to `stage` and push.

    Refuses (VisError, nothing tagged) a dirty workspace, a stale pipeline, a commit whose dvc.lock pins no
    weights, an already released commit (unless only a promotion is asked for), and an unreachable required
    tracking server. A promotion to prod passes the gate first (`_gate`): `force` with a `reason` overrides it,
    and the reason is kept in the tag's message. With `push`, the outputs go to the DVC remote before any tag is
    made, then the tags go to `origin` when there is one.
    """
    root = Path(root).resolve()
    commit = git.head_commit(root)
    if not commit:
        raise VisError(f"{root} has no commit yet: commit the trained pipeline (dvc.lock), then release")
    problems = workspace_problems(root)
    if problems:
        raise VisError("cannot release: " + "; and ".join(problems))
    with snapshot(root, commit) as head:
        path = head.artifact_path(name)
        if head.pinning_stage(path) is None:
            raise VisError(
                f"dvc.lock at HEAD pins no {path}: run `dvc repro` to train, commit dvc.lock, then release again"
            )
        existing = _existing_version(root, name, head, path)
        if existing and not stage:
            how = (
                "HEAD is already released as"
                if version_tags(root, name)[existing] == commit
                else "the weights dvc.lock pins at HEAD are already released as"
            )
            raise VisError(
                f"{how} {existing}: train a new model (`dvc repro` or `dvc exp run`) and commit it for a new "
                f"version, or {_promotion_hint(root, name, existing)}"
            )
        metrics, metadata = head.metrics(), head.metadata()
        track = tracking_for(root, head)
        if track.problem and track.required and track.uri.lower().startswith(("http://", "https://")):
            raise VisError(
                f"cannot release: {track.problem}; the release tags the training's MLflow run: start the server "
                f"or point MLFLOW_TRACKING_URI at the one that holds the run"
            )
        run_id = find_run(head, track)
    notes = []
    gate_note = None
    if stage == GATED_STAGE:
        gate_note, table = _gate(root, name, existing or "workspace", force, reason)
        notes.append(table)
    if push:
        pushed = remote.push(root)
        notes.append(f"dvc push: {pushed} files pushed to {remote.describe(remote.remote_info(root))}")

    if existing:
        version, tag, message = existing.split("@", 1)[1], existing, ""
        commit = version_tags(root, name)[existing]
    else:
        version = gto.next_major(root, name)
        message = tag_message(name, version, metrics, metadata, run_id) + (f"{gate_note}\n" if gate_note else "")
        tag = gto.register(root, name, commit, version, message)
    promotion_tag = None
    if stage:
        promotion = f"{name} {version} -> {stage}" + (f"\n\n{gate_note}\n" if gate_note else "")
        promotion_tag = gto.assign(root, name, stage, version, promotion)
    if not run_id:
        notes.append(f"no MLflow run of this training found at {track.uri} (experiment {track.experiment!r})")
    else:
        note = _tag_run(track, run_id, tag, commit)
        if note:
            notes.append(note)
    if not existing:
        note = _compare_with_previous(root, name, version, metrics)
        if note:
            notes.append(note)
    if push:  # the version tag too when only a promotion was made: a promotion tag alone names no version
        notes.append(_push_tags(root, [t for t in (tag, promotion_tag) if t]))
    return Release(name, version, tag, commit, message, promotion_tag, run_id, notes, new=not existing)
