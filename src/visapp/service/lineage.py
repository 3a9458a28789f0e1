"""Where a job's model comes from, in one answer: the dataset (fingerprint, DVC hash), the params it was trained
with, the code that checked and trained it, and the MLflow run; and the code version of this process."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from visapp.service.records import CodeVersion, JobRecord

COMMIT_ENV = "VISAPP_GIT_COMMIT"  # set where the code has no .git beside it (the image: a build argument)


@functools.cache
def code_version() -> CodeVersion:
    """This process's code: the package's version, and the commit (`VISAPP_GIT_COMMIT`, else the git checkout the
    package runs from, else unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("visapp")
    except PackageNotFoundError:
        package = "unknown"
    commit = os.environ.get(COMMIT_ENV) or None
    if commit is None:
        from visapp.integrations import git

        checkout = Path(__file__).resolve().parents[3]  # src/visapp/service/lineage.py -> the checkout
        if (checkout / ".git").exists():
            commit = git.head_commit(checkout)
    return CodeVersion(package=package, commit=commit)


def lineage(record: JobRecord, attempt: int | None = None) -> dict[str, Any]:
    """A job's lineage: its dataset, its params, its code and its training (the newest attempt, or `attempt`)."""
    chosen = next((a for a in record.attempts if a.number == attempt), None) if attempt else record.current_attempt()
    dataset = {
        "fingerprint": record.metadata.fingerprint if record.metadata else None,
        "raw_dvc_hash": record.metadata.raw_dvc_hash if record.metadata else None,
        "upload": record.upload.model_dump(mode="json"),
        "folder": record.dataset.root if record.dataset else None,
        "classes": record.classes,
    }
    training = None
    if chosen is not None:
        training = {
            "attempt": chosen.number,
            "training": chosen.training,
            "state": str(chosen.state),
            "resumes": chosen.resumes,
            "overrides": chosen.overrides,
            "mlflow_run_id": chosen.mlflow_run_id,
            "metrics": chosen.metrics,
            "code": chosen.worker_code.model_dump(mode="json") if chosen.worker_code else None,
        }
    return {
        "job_id": record.id,
        "dataset": dataset,
        "params": chosen.params if chosen is not None else record.params,
        "code": {"checked_by": record.code.model_dump(mode="json")},
        "training": training,
    }
