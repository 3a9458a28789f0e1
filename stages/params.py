"""DVC stage `params`: params.yaml (and conf/) -> checked, before any other stage runs.

The first stage of the pipeline: every other stage depends on its output, so a bad param stops `dvc repro`
and `dvc exp run` here, before DVC deletes any stage's outputs to run it. It refuses an unknown key (naming
the nearest known one), a wrong type or a value out of range, and, outside `dvc exp run` (which composes
params.yaml itself), a params.yaml that disagrees with conf/.
"""

import logging
import sys
from pathlib import Path

from visapp import console
from visapp.composition import drift, drift_error, in_experiment
from visapp.config import load_params
from visapp.fsio import write_text

log = logging.getLogger("visapp.stages.params")


def main() -> int:
    params = load_params()
    if not in_experiment():
        differences = drift()
        if differences:
            raise drift_error(differences, "the pipeline cannot run")
    write_text(Path(params.paths.checked), "params.yaml is valid and composed from conf/\n")
    log.info("params: params.yaml is valid and composed from conf/")
    return 0


if __name__ == "__main__":
    sys.exit(console.run(main))
