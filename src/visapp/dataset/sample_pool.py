"""Each sample's outcome, in the order of the samples: reused from the store when its files are unchanged,
else checked, in a process pool over the cores when it pays (`visapp.dataset.pool` says how many and how).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path

from visapp.config import DataConfig
from visapp.dataset import pool
from visapp.dataset.reuse_store import Reuse, file_digests, lists_naming, outcome_key, read_with_signature
from visapp.dataset.sample_checks import SampleOutcome, evaluate_sample
from visapp.formats.voc_image_sets import ImageSet
from visapp.formats.voc_layout import SampleFiles

MIN_SAMPLES_PER_WORKER = 64  # below this, starting processes costs more than it saves
# A pool worker's arguments.
_context: tuple[Path, DataConfig, dict[str, ImageSet], Reuse | None, bool] | None = None


def worker_count(samples: int, environ: dict[str, str] | None = None) -> int:
    """How many processes check samples: `$VISAPP_WORKERS`, else one per core, never more than the samples
    justify (1: check in this process)."""
    return max(1, min(pool.cores(environ), samples // MIN_SAMPLES_PER_WORKER))


def _start_worker(
    raw_dir: Path, data: DataConfig, splits: dict[str, ImageSet], reuse_dir: Path | None, measure: bool
) -> None:
    global _context
    # A forked worker inherits the parent's pause (validate's `_cycle_collection_paused`): its samples are its own.
    gc.enable()
    _context = (raw_dir, data, splits, Reuse(reuse_dir) if reuse_dir else None, measure)


def _check_in_worker(task: tuple[SampleFiles, str | None]) -> SampleOutcome:
    assert _context is not None
    raw_dir, data, splits, reuse, measure = _context
    return _check_sample(raw_dir, task[0], data, splits, task[1], reuse, measure)


def check_all(
    raw_dir: Path,
    samples: list[SampleFiles],
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflicts: dict[str, str],
    reuse: Reuse | None,
    measure: bool = False,
) -> Iterator[SampleOutcome]:
    """Each sample's outcome, in the order of `samples`: from `reuse` when its files are unchanged, else
    checked, in a process pool over the cores when it pays.

    Samples are independent (each reads only its own files), and `map` keeps their order, so the outputs are
    the same as checking them one by one here. The workers start as `visapp.dataset.pool` says.
    """
    tasks = [(files, conflicts.get(files.image or "")) for files in samples]
    earlier: dict[int, SampleOutcome] = {}
    if reuse is not None:
        for index, (files, conflict) in enumerate(tasks):
            found = reuse.lookup(raw_dir, files, data, splits, conflict, measure)
            if found is not None:
                earlier[index] = found
    checked = _check_tasks(raw_dir, [t for i, t in enumerate(tasks) if i not in earlier], data, splits, reuse, measure)
    for index in range(len(tasks)):
        yield earlier[index] if index in earlier else next(checked)


def _check_tasks(
    raw_dir: Path,
    tasks: list[tuple[SampleFiles, str | None]],
    data: DataConfig,
    splits: dict[str, ImageSet],
    reuse: Reuse | None,
    measure: bool,
) -> Iterator[SampleOutcome]:
    workers = worker_count(len(tasks))
    if workers == 1:
        for files, conflict in tasks:
            yield _check_sample(raw_dir, files, data, splits, conflict, reuse, measure)
        return
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(32, len(tasks) // (workers * 16)))
    with ProcessPoolExecutor(
        workers,
        mp_context=pool.context(pool.can_fork()),
        initializer=_start_worker,
        initargs=(raw_dir, data, splits, reuse.folder if reuse else None, measure),
    ) as executor:
        yield from executor.map(_check_in_worker, tasks, chunksize=chunk)


def _check_sample(
    raw_dir: Path,
    files: SampleFiles,
    data: DataConfig,
    splits: dict[str, ImageSet],
    conflict: str | None,
    reuse: Reuse | None = None,
    measure: bool = False,
) -> SampleOutcome:
    """One sample's outcome: from `reuse` when an earlier run checked the same bytes under the same rules.
    `measure`: also measure the image for the quality checks (`SampleOutcome.measurement`)."""
    xml, xml_signature = read_with_signature(raw_dir, files.annotation) if files.annotation else (None, None)
    image, image_signature = read_with_signature(raw_dir, files.image) if files.image else (None, None)
    image_sha256 = hashlib.sha256(image).hexdigest() if isinstance(image, bytes) else None
    key, digests = None, []
    if reuse is not None and not isinstance(xml, OSError) and not isinstance(image, OSError):
        xml_sha256 = hashlib.sha256(xml).hexdigest() if xml is not None else None
        key = outcome_key(files, data, lists_naming(files, splits), conflict, image_sha256, xml_sha256, measure)
        digests = file_digests(files, (image_signature, image_sha256), (xml_signature, xml_sha256))
        earlier = reuse.get(key)
        if earlier is not None:
            earlier.key, earlier.reused, earlier.digests = key, True, digests
            return earlier
    out = evaluate_sample(raw_dir, files, data, splits, conflict, image, xml, measure, image_sha256)
    out.key, out.digests = key, digests
    return out
