"""tracking params + a training's numbers and files -> one MLflow run (URI resolution, reachability, tags).

The tracking URI is `MLFLOW_TRACKING_URI`, else `tracking.uri`, else a local `sqlite:///mlflow.db` in the
repository root, outside every output (for a queued experiment: the repository it was queued in, not its
temporary copy). An http(s) server is asked for `/health` before training starts, so a wrong URI fails in
seconds, not after hours of training.

Everything goes through `MlflowClient` with an explicit run id, never through MLflow's global "active run":
a resumed training reopens the run id it stored beside its checkpoint, so one training is one run.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visapp.config import TrackingConfig
from visapp.errors import VisError
from visapp.integrations import git
from visapp.integrations.dvc_env import experiment_name, repository_root

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"
RUN_FILE = "mlflow_run.json"  # beside metrics.json: the MLflow run of the model (the registry reads it)
URI_ENV = "MLFLOW_TRACKING_URI"
# Tag names other steps read back (release, lineage): keep them stable.
TAG_GIT_COMMIT = "git_commit"
TAG_DVC_EXP = "dvc_exp_name"
TAG_GIT_DIRTY = "git_dirty"
TAG_GIT_BRANCH = "git_branch"
TAG_RELEASED_COMMIT = "released_commit"
TAG_FINGERPRINT = "dataset_fingerprint"
TAG_RAW_DVC_HASH = "raw_dvc_hash"
TAG_CHECKPOINT_KEY = "checkpoint_key"
JOB_ENV = "VISAPP_JOB_ID"  # set by the service's worker for the training of a job
TAG_JOB = "visapp_job_id"
HEALTH_TIMEOUT_S = 5.0


def resolve_uri(config: TrackingConfig, environ: Mapping[str, str] | None = None) -> str:
    """`MLFLOW_TRACKING_URI`, else `tracking.uri`, else the local SQLite file."""
    environ = os.environ if environ is None else environ
    return environ.get(URI_ENV) or config.uri or default_uri()


def default_uri() -> str:
    """`sqlite:///mlflow.db` in the repository (also from a queued experiment's temporary copy)."""
    root = repository_root()
    return DEFAULT_URI if root == Path() else f"sqlite:///{(root / 'mlflow.db').as_posix()}"


def _source() -> str:
    """Where the URI came from, for error messages."""
    return f"${URI_ENV}" if os.environ.get(URI_ENV) else "tracking.uri"


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise `VisError` when an http(s) tracking server does not answer `GET <uri>/health` (local stores pass)."""
    if not uri.lower().startswith(("http://", "https://")):
        return
    url = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        problem = f"answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"is not reachable ({getattr(exc, 'reason', exc)})"
    raise VisError(
        f"MLflow tracking server {uri} {problem} (checked {url} before training, from {_source()}); "
        f"start the server (`mlflow server --host 127.0.0.1 --port 5000 ...`), point MLFLOW_TRACKING_URI or "
        f"tracking.uri at a running one, or set tracking.required=false to train without tracking"
    )


def _no_telemetry() -> None:
    """MLflow 3 sends usage telemetry (config.mlflow-telemetry.io) unless told not to, before its first import."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def client_for(uri: str) -> MlflowClient:
    """An `MlflowClient` for `uri`, with MLflow's telemetry off (offline machines, no surprise traffic)."""
    _no_telemetry()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _param_value(value: Any) -> str:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    text = str(value)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 3] + "..."


@dataclass
class Run:
    """One MLflow run, addressed by id; every call says which run it writes to."""

    uri: str
    run_id: str
    experiment_id: str
    _client: MlflowClient | None = field(default=None, repr=False)

    @property
    def client(self) -> MlflowClient:
        """The MLflow client of the run's tracking URI (made on first use)."""
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        """Log params not logged yet; return the keys whose logged value differs (MLflow forbids changing them)."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        new = [Param(key, _param_value(value)) for key, value in sorted(params.items()) if key not in logged]
        changed = [key for key, value in sorted(params.items()) if key in logged and logged[key] != _param_value(value)]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=new[start : start + 100])
        return changed

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set the run's tags (values as text)."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in sorted(tags.items())])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at `step` (an epoch; 0 when None), in batches MLflow accepts."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step or 0) for key, value in sorted(metrics.items())]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as the artifact file `artifact_file` of the run."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's files (under `artifact_path`/<folder name>)."""
        if path.is_dir():
            sub = f"{artifact_path}/{path.name}" if artifact_path else path.name
            self.client.log_artifacts(self.run_id, str(path), sub)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` (FINISHED, FAILED, KILLED)."""
        self.client.set_terminated(self.run_id, status=status)


def end_abandoned(uri: str, run_id: str) -> bool:
    """End as KILLED a run left RUNNING by a training whose process died before it could resume it; whether it
    was RUNNING. (A run that no longer exists, or one already ended, is left as it is.)"""
    from mlflow.exceptions import MlflowException

    client = client_for(uri)
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return False
        client.set_terminated(run_id, status="KILLED")
    except MlflowException:
        return False
    return True


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created when missing (two parallel trainings may race to create it: one wins)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise VisError(
                    f"MLflow at {client.tracking_uri} refused to create experiment {name!r}: {exc}"
                ) from None
    if experiment.lifecycle_stage == "deleted":
        raise VisError(
            f"MLflow experiment {name!r} is deleted at {client.tracking_uri}; restore it "
            f"(`mlflow experiments restore`) or choose another tracking.experiment"
        )
    return experiment.experiment_id


def open_run(uri: str, experiment: str, run_name: str, tags: Mapping[str, Any], run_id: str | None = None) -> Run:
    """Reopen `run_id` when it still exists there (a resumed training), else create a run in `experiment`."""
    client = client_for(uri)
    from mlflow.exceptions import MlflowException

    try:
        if run_id:
            try:
                existing = client.get_run(run_id)
            except MlflowException:
                existing = None
            if existing is not None and existing.info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                run = Run(uri, run_id, existing.info.experiment_id, client)
                run.set_tags(tags)
                return run
        experiment_id = _experiment_id(client, experiment)
        created = client.create_run(experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name)
    except MlflowException as exc:
        raise VisError(f"MLflow at {uri} refused to open a run: {exc.message}; check the server and its logs") from None
    return Run(uri, created.info.run_id, experiment_id, client)


@dataclass(frozen=True)
class Source:
    """The code a training runs: the checked-out commit, the branch, and whether the workspace differs from it."""

    commit: str | None
    branch: str | None
    dirty: bool
    diff: str = ""  # `git diff HEAD` and the untracked files, when dirty


def source(cwd: Path | None = None) -> Source:
    """The code in `cwd` (default: the working directory): its commit, branch and uncommitted changes."""
    root = cwd or Path()
    commit = git.head_commit(root)
    if commit is None:
        return Source(None, None, False)
    try:
        diff = git.workspace_diff(root)
    except VisError:
        diff = ""
    return Source(commit, git.branch(root), bool(diff.strip()), diff)


def run_name(code: Source, checkpoint_key: str, environ: Mapping[str, str] | None = None) -> str:
    """The DVC experiment's name, else where the code is: `main@1a2b3c4`, `main@1a2b3c4+changes` when dirty."""
    experiment = experiment_name(environ)
    if experiment:
        return experiment
    if code.commit is None:
        return f"train-{checkpoint_key[:8]}"
    where = f"{code.branch or 'detached'}@{code.commit[:7]}"
    return f"{where}+changes" if code.dirty else where


def run_tags(
    metadata: Mapping[str, Any], checkpoint_key: str, code: Source, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The lineage tags of a training: the code (commit, dirty), DVC experiment, dataset fingerprint and hash.

    The commit is the one checked out when training ran: the commit that holds the training is made after it.
    `git_dirty` says whether the workspace differed from that commit (the difference is logged as the artifact
    `code/workspace.diff`); `visapp release` adds the commit the version was released from.
    """
    environ = os.environ if environ is None else environ
    tags = {
        TAG_GIT_COMMIT: code.commit or "unknown",
        TAG_GIT_DIRTY: str(code.dirty).lower(),
        TAG_FINGERPRINT: str(metadata.get("fingerprint") or ""),
        TAG_RAW_DVC_HASH: str(metadata.get("raw_dvc_hash") or ""),
        TAG_CHECKPOINT_KEY: checkpoint_key,
    }
    experiment = experiment_name(environ)
    if experiment:
        tags[TAG_DVC_EXP] = experiment
    if environ.get(JOB_ENV):
        tags[TAG_JOB] = environ[JOB_ENV]
    if code.branch:
        tags[TAG_GIT_BRANCH] = code.branch
    if code.commit:
        tags["mlflow.source.git.commit"] = code.commit  # shown by the MLflow UI
    return tags
