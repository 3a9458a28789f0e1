"""DVC stage `metadata`: manifest + data/yolo -> data/metadata/dataset_metadata.json and figures."""

import logging
import sys
from pathlib import Path

from visapp import console
from visapp.config import load_params
from visapp.dataset.statistics import build_metadata
from visapp.formats.manifest import MANIFEST_FILE
from visapp.formats.report import REPORT_FILE

log = logging.getLogger("visapp.stages.metadata")


def main() -> int:
    params = load_params()
    metadata = build_metadata(
        manifest_path=Path(params.paths.validated) / MANIFEST_FILE,
        yolo_dir=Path(params.paths.yolo),
        raw_dir=Path(params.paths.raw),
        out_dir=Path(params.paths.metadata),
        classes=params.data.classes,
        progress=console.progress_display(),
        report_path=Path(params.paths.validated) / REPORT_FILE,
    )
    log.info("metadata: %d images, fingerprint %s", metadata["overall"]["images"], metadata["fingerprint"][:12])
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
