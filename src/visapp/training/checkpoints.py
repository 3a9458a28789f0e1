"""The checkpoint folder of a training: where it is, what names it, what state it holds, and its lock.

DVC deletes a stage's outputs before running it, so Ultralytics works in `<base>/<key>/run/`, outside them:

- `<base>` is `$VISAPP_CHECKPOINT_DIR`, else `.cache/train` in the repository (also for a queued experiment,
  whose temporary copy of the repository is deleted afterwards); sync it to S3 on spot runners;
- `<key>` hashes what decides the training (the `model` and `train` params except `train.resume`, `seed`) and
  the data (the dataset fingerprint): a changed param or dataset starts over, the same ones resume;
- `<key>/state.json` says how far the training got (status, epoch, seconds, its MLflow run);
- `plan_resume` decides from it and from `last.pt` whether to resume, to write a finished training's results,
  or to start over; `start_over` never removes a folder without a log line saying why, and moves a checkpoint
  this torch or Ultralytics cannot load to `<base>/incompatible/` instead of deleting it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visapp.config import Params, Resume, params_dict
from visapp.errors import VisError
from visapp.fsio import dumps_json, exclusive_lock, write_text
from visapp.integrations import ultralytics
from visapp.integrations.dvc_env import repository_root

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "VISAPP_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = Path(".cache/train")
STATE_FILE = "state.json"
RUN_DIR = "run"  # Ultralytics' folder in a checkpoint folder: weights/last.pt, weights/best.pt, results.csv
ASIDE_DIR = "incompatible"  # under <base>: checkpoint folders this torch or Ultralytics could not load


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
        state = json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    """Write the folder's state.json (atomically: a kill leaves the previous state)."""
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


@dataclass(frozen=True)
class ResumePlan:
    """What a training does with its checkpoint folder: "resume" after `epoch`, "finalize" (write the results of
    a training that finished), or "fresh"; for "fresh", `why` the folder's training is not carried on, and
    whether its checkpoint is `incompatible` (kept aside, never deleted)."""

    mode: str
    state: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    why: str = ""
    incompatible: bool = False


def plan_resume(resume: Resume, ckpt_dir: Path) -> ResumePlan:
    """Resume, finalize or start over, from the folder's state.json and its `last.pt` (`train.resume: auto`)."""
    if resume != Resume.auto:
        return ResumePlan("fresh", why="train.resume is never")
    state = read_state(ckpt_dir)
    weights = ckpt_dir / RUN_DIR / "weights"
    status = state.get("status")
    if status == "trained" and (weights / "best.pt").is_file():
        return ResumePlan("finalize", state)
    if status == "training":
        checkpoint = ultralytics.read_checkpoint(weights / "last.pt")
        if checkpoint.kind == "resumable":
            return ResumePlan("resume", state, checkpoint.epoch)
        return ResumePlan("fresh", why=checkpoint.why, incompatible=checkpoint.kind == "incompatible")
    why = {
        None: f"it holds no training state ({STATE_FILE} is missing or unreadable)",
        "trained": f"its training finished, but {weights / 'best.pt'} is missing",
        "done": "its training finished and its results were written (DVC reruns the stage only to train again)",
    }.get(status, f"its state says {status!r}")
    return ResumePlan("fresh", why=why)


def start_over(base: Path, ckpt_dir: Path, plan: ResumePlan) -> Path | None:
    """Empty `ckpt_dir` for a new training, logging why. A checkpoint this torch or Ultralytics cannot load is
    moved to `<base>/incompatible/<key>[-N]` (returned), never deleted: the environment that wrote it can still
    resume it."""
    if not ckpt_dir.exists():
        log.info("train: new training in %s", ckpt_dir)
        return None
    if plan.incompatible:
        aside = base / ASIDE_DIR / ckpt_dir.name
        number = 1
        while aside.exists():
            number += 1
            aside = base / ASIDE_DIR / f"{ckpt_dir.name}-{number}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        ckpt_dir.rename(aside)
        log.warning(
            "train: %s; its checkpoint folder is kept in %s (resume it with the torch and Ultralytics that wrote "
            "it, or delete it), and a new training starts in %s",
            plan.why,
            aside,
            ckpt_dir,
        )
        return aside
    log.info("train: new training in %s; the one there is removed: %s", ckpt_dir, plan.why)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return None
