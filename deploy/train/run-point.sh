#!/usr/bin/env bash
# Train one point of .github/workflows/train.yml on its EC2 runner: restore the checkpoints a reclaimed
# attempt left on S3, train with `dvc exp run` while checkpoint-sync.sh copies them back, then stop the copy.
#
#   OVERRIDES            Hydra overrides, space-separated (each becomes `-S key=value`)      (required)
#   EXP_NAME             the DVC experiment's name: the same for every attempt of this point  (required)
#   VISAPP_CHECKPOINT_DIR the training's checkpoint folder (the train stage resumes from it)  (required)
#   CHECKPOINT_URL       s3://... copy of that folder (empty: no copy, nothing to resume from)
#
# The checkpoint key hashes the params and the data, so the restored folder is the one this training
# resumes from: the same point on a fresh runner continues from the last synced epoch, in the same MLflow run.
set -euo pipefail

: "${EXP_NAME:?}" "${VISAPP_CHECKPOINT_DIR:?}"
read -r -a overrides <<<"${OVERRIDES:?}"
sets=()
for override in "${overrides[@]}"; do sets+=(-S "$override"); done

mkdir -p "$VISAPP_CHECKPOINT_DIR"
sync_pid=
if [[ -n "${CHECKPOINT_URL:-}" ]]; then
  aws s3 sync "$CHECKPOINT_URL" "$VISAPP_CHECKPOINT_DIR" --only-show-errors --no-progress
  restored=$(find "$VISAPP_CHECKPOINT_DIR" -type f | wc -l)
  echo "restored $restored checkpoint file(s) from $CHECKPOINT_URL"
  bash "$(dirname "$0")/checkpoint-sync.sh" "$VISAPP_CHECKPOINT_DIR" "$CHECKPOINT_URL" &
  sync_pid=$!
fi

stop_sync() {
  if [[ -n "$sync_pid" ]]; then
    kill -TERM "$sync_pid" 2>/dev/null || true
    wait "$sync_pid" || true # its last sync
  fi
}
trap stop_sync EXIT

echo "dvc exp run --name $EXP_NAME ${sets[*]}"
dvc exp run --name "$EXP_NAME" "${sets[@]}"
