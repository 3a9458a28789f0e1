"""DVC stage `metadata`: manifest + data/yolo -> data/metadata/dataset_metadata.json and figures."""

import sys
from pathlib import Path

from visapp.config import load_params
from visapp.errors import exit_on_error
from visapp.metadata import build_metadata


def main() -> int:
    params = load_params()
    metadata = build_metadata(
        manifest_path=Path(params.paths.validated) / "manifest.jsonl",
        yolo_dir=Path(params.paths.yolo),
        raw_dir=Path(params.paths.raw),
        out_dir=Path(params.paths.metadata),
        classes=params.data.classes,
    )
    print(f"metadata: {metadata['overall']['images']} images, fingerprint {metadata['fingerprint'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
