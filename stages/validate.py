"""DVC stage `validate`: data/raw (VOC) -> data/validated/{manifest.jsonl, report.json}."""

import logging
import sys
from pathlib import Path

from visapp import console
from visapp.config import load_params
from visapp.dataset.reuse_store import default_folder
from visapp.dataset.validate import run_validate
from visapp.formats.report import REPORT_FILE, format_summary

log = logging.getLogger("visapp.stages.validate")


def main() -> int:
    params = load_params()
    out_dir = Path(params.paths.validated)
    # earlier runs' outcomes, reused for unchanged samples
    result = run_validate(params, progress=console.progress_display(), reuse_dir=default_folder())
    log.info("%s", format_summary(result.report))
    stopped = result.stop_reason(params.data.on_error)
    if stopped == "dataset_empty":
        log.error("validate: nothing to train on (dataset_empty; every issue is in %s)", out_dir / REPORT_FILE)
        return 1
    if stopped == "rejected":
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
