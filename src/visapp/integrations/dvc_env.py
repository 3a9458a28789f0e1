"""What DVC tells the stages it runs through their environment: the repository (also when a queued experiment
runs in a temporary copy of it) and the experiment's name. The one place these variables are read; it imports
nothing of DVC, so the data stages use it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by DVC for every `dvc exp run`, which composes params.yaml itself
EXPERIMENTS_TMP = (".dvc", "tmp", "exps")  # where `dvc exp run --queue/--temp` copies the repository


ROOT_ENV = "DVC_ROOT"  # DVC sets it for every stage it runs: the repository, also for a queued experiment


def repository_root(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The repository a stage works for, even when DVC runs it in a temporary copy.

    `dvc exp run --queue` / `--temp` run each experiment in a copy under `<repo>/.dvc/tmp/exps/`, deleted
    afterwards. Local state that must outlive one experiment (training checkpoints, the default SQLite MLflow
    store) belongs to `<repo>`: `$DVC_ROOT` when DVC runs the stage, else found from the working directory.
    Returns `Path(".")` when the working directory is the repository itself.
    """
    here = (cwd or Path.cwd()).resolve()
    root = (os.environ if environ is None else environ).get(ROOT_ENV)
    if root and Path(root).resolve() != here:
        return Path(root)
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == EXPERIMENTS_TMP:
            return Path(*parts[:i])
    return Path()


def experiment_name(environ: Mapping[str, str] | None = None) -> str | None:
    """The DVC experiment this process runs for (`dvc exp run`), None outside one."""
    return (os.environ if environ is None else environ).get(EXPERIMENT_ENV) or None
