"""DVC stage `validate`: data/raw (VOC) -> data/validated/{manifest.jsonl, report.json}."""

import logging
import sys
from pathlib import Path

from visapp import console
from visapp.config import OnError, load_params
from visapp.dataset.quality import QualityRules
from visapp.dataset.reuse_store import default_folder
from visapp.dataset.validate import validate_dataset, write_validation
from visapp.formats.report import REPORT_FILE, format_summary, has_errors

log = logging.getLogger("visapp.stages.validate")


def main() -> int:
    params = load_params()
    out_dir = Path(params.paths.validated)
    result = validate_dataset(
        Path(params.paths.raw),
        params.data,
        progress=console.progress_display(),
        reuse_dir=default_folder(),  # earlier runs' outcomes, reused for unchanged samples
        quality=QualityRules.from_params(params),
    )
    write_validation(result, out_dir, on_error=params.data.on_error)
    log.info("%s", format_summary(result.report))
    if not result.rows:
        log.error("validate: nothing to train on (dataset_empty; every issue is in %s)", out_dir / REPORT_FILE)
        return 1
    if has_errors(result.report) and params.data.on_error == OnError.fail:
        log.error(
            "validate: %d rejected, and data.on_error=fail (every issue is in %s): fix them, or run with "
            "data.on_error=skip to leave the rejected samples out",
            result.report["rejected"],
            out_dir / REPORT_FILE,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
