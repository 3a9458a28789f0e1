"""DVC stage `convert`: data/validated/manifest.jsonl -> data/yolo (YOLO labels, split lists, data.yaml)."""

import logging
import sys

from visapp import console
from visapp.config import load_params
from visapp.dataset.convert import run_convert

log = logging.getLogger("visapp.stages.convert")


def main() -> int:
    summary = run_convert(load_params(), progress=console.progress_display())
    log.info("%s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
