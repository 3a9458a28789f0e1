"""A VOC folder + checked params -> the data stages' outputs: validate -> convert -> metadata, in one call.

Each data stage is one function of its module, from params to written outputs: `run_validate`, `run_convert`,
`run_metadata`. A stage script calls its own (so that DVC reruns a stage only for the code that stage runs), and
`run_data_stages` calls the three in order, as `dvc repro` does: the service checks an upload with it, so an
upload gets exactly what the pipeline gets from the same files (the quality findings, the report, the labels,
the metadata with its figures and hashes). Every path comes from `params.paths`.

Validate stops the run when nothing was accepted (`dataset_empty`), or when samples were rejected and
`data.on_error` is `fail`; with `skip`, the rejected samples are left out and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.config import Params
from visapp.dataset.convert import ConversionSummary, run_convert
from visapp.dataset.statistics import run_metadata
from visapp.dataset.validate import run_validate
from visapp.formats.report import Report
from visapp.progress import ProgressCallback


@dataclass
class DataStagesResult:
    """What the stages found and wrote: the report always; the rest when validate let the run go on."""

    report: Report  # validate's report.json
    stopped: str | None  # why validate stopped the run ("dataset_empty", "rejected"), or None
    conversion: ConversionSummary | None = None
    metadata: dict[str, Any] | None = None  # dataset_metadata.json


def run_data_stages(
    params: Params,
    progress: ProgressCallback | None = None,
    reuse_dir: Path | None = None,
    raw_dvc_hash: str | None = None,
) -> DataStagesResult:
    """Validate `paths.raw`, then (unless validate stops the run) convert it and describe it.

    Args:
        params: checked params; `paths.raw` is read, `paths.validated`, `paths.yolo`, `paths.metadata` written.
        progress: told as each stage goes (tasks "validate", "convert", "metadata").
        reuse_dir: validate's store of earlier outcomes; None: every sample is checked.
        raw_dvc_hash: DVC's hash of `paths.raw` for the metadata; None: the one `<paths.raw>.dvc` records.
    """
    validation = run_validate(params, progress=progress, reuse_dir=reuse_dir)
    result = DataStagesResult(validation.report, validation.stop_reason(params.data.on_error))
    if result.stopped is None:
        result.conversion = run_convert(params, progress=progress)
        result.metadata = run_metadata(params, progress=progress, raw_dvc_hash=raw_dvc_hash)
    return result
