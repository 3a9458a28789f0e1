"""`visapp promote JOB_ID`: a service job's dataset becomes the pipeline's `data/raw`, through the ingest.

The uploaded archive is fetched from the job store and ingested like any archive (checks, atomic swap,
`dvc add`), so the reproducible pipeline takes over: `dvc repro`, then `visapp release`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from visapp.config import PARAMS_FILE, load_params
from visapp.errors import VisError
from visapp.ingest.ingest import IngestResult, ingest
from visapp.service import records
from visapp.service.settings import ServiceSettings
from visapp.service.store import JobStore, UnknownJob


def promote(job_id: str, raw: str | None = None, name: str | None = None) -> IngestResult:
    settings = ServiceSettings.from_env()
    store = JobStore(settings.store_url)
    try:
        record = records.load(store, job_id)
    except UnknownJob:
        raise VisError(f"no job {job_id!r} in the job store {settings.store_url} (VISAPP_STORE_URL)") from None
    if record.state in (records.State.rejected, records.State.uploaded, records.State.validating):
        raise VisError(f"job {job_id} is {record.state}: only a dataset that passed validation can be promoted")
    params = load_params(PARAMS_FILE) if Path(PARAMS_FILE).is_file() else None
    raw_dir = raw or (params.paths.raw if params else "data/raw")
    stored = record.upload.stored_as
    label = name or f"service job {job_id} ({record.upload.filename or stored})"
    with tempfile.TemporaryDirectory(
        prefix="promote-", dir=settings.work_dir if settings.work_dir.is_dir() else None
    ) as tmp:
        archive = Path(tmp) / stored
        store.get(job_id, stored, archive)
        result = ingest(archive, raw_dir, name=label, classes=params.data.classes if params else None)
    if params and record.classes and record.classes != params.data.classes:
        result.notes.append(
            f"the job trained with classes {record.classes}; data.classes is {params.data.classes}: set it in "
            "conf/data/ and run `make params` if the model should match"
        )
    result.notes.append("next: `dvc repro`, then `visapp release` (and commit data/raw.dvc)")
    return result
