"""`visapp promote JOB_ID`: a service job's dataset becomes the pipeline's `data/raw`, through the ingest.

The uploaded archive is fetched from the job store and ingested like any archive (checks, atomic swap,
`dvc add`), so the reproducible pipeline takes over: `dvc repro`, then `visapp release`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from visapp.composition import applicable_params
from visapp.config import PARAMS_FILE
from visapp.errors import VisError
from visapp.ingest.ingest import IngestResult, ingest
from visapp.service import records
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore, UnknownJob


def promote(job_id: str, raw: str | None = None, name: str | None = None) -> IngestResult:
    """Put a checked job's dataset into the project's raw folder (`visapp ingest` of its upload).

    Args:
        job_id: the job (in the store of VISAPP_STORE_URL).
        raw: the dataset folder; default `paths.raw` of the params that apply here.
        name: the version's name; default the job and its upload's file name.

    Returns:
        What the ingest did, with notes: a class list or an on_error that differs from the project's, what next.

    Raises:
        VisError: no such job, or a job whose dataset did not pass its check.
    """
    settings = ServiceSettings.from_env()
    store = JobStore(settings.store_url)
    try:
        record = records.load(store, job_id)
    except UnknownJob:
        raise VisError(f"no job {job_id!r} in the job store {settings.store_url} (VISAPP_STORE_URL)") from None
    if record.metadata is None:
        raise VisError(f"job {job_id} is {record.state}: only a dataset that passed its check can be promoted")
    params = applicable_params(".")
    own = Path(PARAMS_FILE).is_file()  # a project's own class list, to compare the job's with
    raw_dir = raw or params.paths.raw
    stored = record.upload.stored_as
    label = name or f"service job {job_id} ({record.upload.filename or stored})"
    with tempfile.TemporaryDirectory(
        prefix="promote-", dir=settings.work_dir if settings.work_dir.is_dir() else None
    ) as tmp:
        archive = Path(tmp) / stored
        store.get(job_id, stored, archive)
        result = ingest(archive, raw_dir, name=label, classes=params.data.classes if own else None)
    if own and record.classes and record.classes != params.data.classes:
        result.notes.append(
            f"the job trained with classes {record.classes}; data.classes is {params.data.classes}: set it in "
            "conf/data/ and run `make params` if the model should match"
        )
    if record.validation is not None and record.validation.left_out:
        result.notes.append(
            f"the job left {record.validation.rejected} rejected sample(s) out (on_error=skip); the archive holds "
            "them, so `dvc repro` rejects them too unless data.on_error is skip"
        )
    result.notes.append("next: `dvc repro`, then `visapp release` (and commit data/raw.dvc)")
    return result
