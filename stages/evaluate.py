"""DVC stage `evaluate`: models/yolo/weights/best.pt + data/yolo -> models/yolo/{eval.json, eval_plots/, audit.json,
audit.png}: the model on the held-out test split, and the likely label errors of the images it did not train on."""

import logging
import sys

from visapp import console
from visapp.config import load_params
from visapp.training.evaluate import run_evaluate

log = logging.getLogger("visapp.stages.evaluate")


def main() -> int:
    found = run_evaluate(load_params())
    evaluation, audit = found["evaluation"], found["audit"]
    log.info(
        "evaluate: %s split, %d images: mAP50 %.3f, mAP50-95 %.3f, %.1f ms an image on %s; audit: %d of %d held-out "
        "images flagged %s",
        evaluation["split"],
        evaluation["images"],
        evaluation["overall"]["mAP50"],
        evaluation["overall"]["mAP50-95"],
        evaluation["inference_ms_per_image"],
        evaluation["device"],
        audit["flagged"],
        audit["images"],
        audit["kinds"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
