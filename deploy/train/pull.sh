#!/usr/bin/env bash
# Pull what a training on a fresh runner needs from the DVC remote, and no more must be there.
#
#   1. The pipeline's inputs, the data that `dvc add` tracks (every *.dvc file: data/raw.dvc, local weights):
#      they must be in the remote (`dvc push` after `dvc add`), or nothing can train: a missing one fails here.
#   2. The stage outputs dvc.lock records, where the remote has them: each one there spares `dvc exp run` a stage.
#      One missing (a `dvc repro` whose outputs were never pushed) is left to `dvc exp run` to rebuild.
#      A plain `dvc pull` fails on it ("Checkout failed for following targets"), and with it the training.
set -euo pipefail

mapfile -t inputs < <(git ls-files -- '*.dvc')
((${#inputs[@]} > 0)) || {
  echo "::error::no .dvc file in this checkout: nothing tracks the data (dvc add data/raw, commit, dvc push)" >&2
  exit 1
}
echo "dvc pull ${inputs[*]}"
dvc pull "${inputs[@]}"

if [[ -f dvc.lock ]]; then
  echo "dvc pull --allow-missing (the stage outputs the remote has; dvc exp run rebuilds the others)"
  dvc pull --allow-missing || echo "::warning::some stage outputs could not be pulled: dvc exp run rebuilds them"
fi
