"""DVC stage `convert`: data/validated/manifest.jsonl -> data/yolo (YOLO labels, split lists, data.yaml)."""

import sys
from pathlib import Path

from visapp.config import load_params
from visapp.convert import convert
from visapp.errors import exit_on_error


def main() -> int:
    params = load_params()
    summary = convert(
        manifest_path=Path(params.paths.validated) / "manifest.jsonl",
        raw_dir=Path(params.paths.raw),
        out_dir=Path(params.paths.yolo),
        data=params.data,
        seed=params.seed,
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
