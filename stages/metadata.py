"""DVC stage `metadata`: manifest + data/yolo -> data/metadata/dataset_metadata.json and figures."""

import logging
import sys

from visapp import console
from visapp.config import load_params
from visapp.dataset.statistics import run_metadata

log = logging.getLogger("visapp.stages.metadata")


def main() -> int:
    metadata = run_metadata(load_params(), progress=console.progress_display())
    log.info("metadata: %d images, fingerprint %s", metadata["overall"]["images"], metadata["fingerprint"][:12])
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
