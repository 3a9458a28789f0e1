"""DVC stage `convert`: data/validated/manifest.jsonl -> data/yolo (YOLO labels, split lists, data.yaml)."""

import logging
import sys
from pathlib import Path

from visapp import console
from visapp.config import load_params
from visapp.dataset.convert import convert
from visapp.formats.manifest import MANIFEST_FILE

log = logging.getLogger("visapp.stages.convert")


def main() -> int:
    params = load_params()
    summary = convert(
        manifest_path=Path(params.paths.validated) / MANIFEST_FILE,
        raw_dir=Path(params.paths.raw),
        out_dir=Path(params.paths.yolo),
        data=params.data,
        seed=params.seed,
        progress=console.progress_display(),
    )
    log.info("%s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
