"""DVC stage `train`: data/yolo + data/raw + dataset_metadata.json -> models/yolo (weights, metrics, curves)."""

import sys

from visapp.config import load_params
from visapp.errors import exit_on_error
from visapp.train import train_model


def main() -> int:
    params = load_params()
    metrics = train_model(params)
    print(
        f"train: {metrics['epochs']} epochs in {metrics['train_seconds']:.0f} s, mAP50 {metrics['mAP50']:.3f}, "
        f"mAP50-95 {metrics['mAP50-95']:.3f} -> {params.paths.model}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
