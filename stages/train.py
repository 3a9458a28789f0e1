"""DVC stage `train`: data/yolo + data/raw + dataset_metadata.json -> models/yolo (weights, metrics, curves)."""

import logging
import sys

from visapp import console
from visapp.config import load_params
from visapp.training.run import train_model

log = logging.getLogger("visapp.stages.train")


def main() -> int:
    params = load_params()
    metrics = train_model(params, progress=console.progress_display(), verbose=console.is_terminal(sys.stdout))
    log.info(
        "train: %d epochs in %.0f s, mAP50 %.3f, mAP50-95 %.3f -> %s",
        metrics["epochs"],
        metrics["train_seconds"],
        metrics["mAP50"],
        metrics["mAP50-95"],
        params.paths.model,
    )
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
