"""The checkpoint folder of a training: where it is, what names it, what state it holds, and its lock.

DVC deletes a stage's outputs before running it, so Ultralytics works in `<base>/<key>/run/`, outside them:

- `<base>` is `$VISAPP_CHECKPOINT_DIR`, else `.cache/train` in the repository (also for a queued experiment,
  whose temporary copy of the repository is deleted afterwards); sync it to S3 on spot runners;
- `<key>` hashes what decides the training (the `model` and `train` params except `train.resume`, `seed`) and
  the data (the dataset fingerprint): a changed param or dataset starts over, the same ones resume;
- `<key>/state.json` says how far the training got (status, epoch, seconds, its MLflow run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visapp.config import Params, params_dict
from visapp.errors import VisError
from visapp.fsio import dumps_json, exclusive_lock, write_text
from visapp.integrations.dvc import repository_root

CHECKPOINT_ENV = "VISAPP_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = Path(".cache/train")
STATE_FILE = "state.json"


def checkpoint_key(params: Params, fingerprint: str) -> str:
    """16 hex digits naming the checkpoint folder: model + train (but resume) + seed + dataset fingerprint."""
    values = params_dict(params)
    train = dict(values["train"])
    train.pop("resume")  # how to handle a checkpoint, not what is trained
    payload = {"model": values["model"], "train": train, "seed": values["seed"], "data": fingerprint}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def checkpoint_base(environ: Mapping[str, str] | None = None) -> Path:
    """`$VISAPP_CHECKPOINT_DIR`, else `.cache/train` in the repository (also for a queued experiment)."""
    environ = os.environ if environ is None else environ
    if environ.get(CHECKPOINT_ENV):
        return Path(environ[CHECKPOINT_ENV])
    return repository_root() / DEFAULT_CHECKPOINT_DIR


def read_state(ckpt_dir: Path) -> dict[str, Any]:
    """The folder's state.json, or {} when there is none (or a kill left it unreadable: start over)."""
    try:
        return json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    write_text(ckpt_dir / STATE_FILE, dumps_json(state))


@contextmanager
def training_lock(base: Path, key: str) -> Iterator[None]:
    """One training per checkpoint key at a time (two queued experiments with the same params would collide)."""
    lock_path = base / f"{key}.lock"
    busy = (
        f"another training with the same params and data is running (lock {lock_path}); wait for it, "
        f"or give this one another {CHECKPOINT_ENV}"
    )
    with exclusive_lock(lock_path, busy):
        yield


def prune_finished(base: Path, holding: str) -> list[Path]:
    """Remove the folders of finished trainings under `base` (ours, `holding`, whose lock we hold, included).

    A finished training is never resumed (DVC reruns the stage only to train again), so its checkpoints are
    only disk: hundreds of MB after a few trainings. An unfinished one (killed, or running) is kept for resume;
    another key's folder is removed only when its lock can be taken, so a running training is never touched.
    """
    removed = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        if read_state(folder).get("status") != "done":
            continue
        if folder.name == holding:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            try:
                with training_lock(base, folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
            except VisError:
                continue  # its lock is held: a training with that key runs
            (base / f"{folder.name}.lock").unlink(missing_ok=True)
        removed.append(folder)
    return removed
