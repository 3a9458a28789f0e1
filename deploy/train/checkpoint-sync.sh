#!/usr/bin/env bash
# Keep a copy of the training's checkpoint folder on S3 while it trains, for a spot runner taken back.
#
#   checkpoint-sync.sh DIR S3_URL
#
# Every SYNC_EVERY seconds (default 60: about once an epoch of a small model, at most a minute behind a
# large one) and at once when EC2 announces a spot interruption (two minutes' notice, polled every 5 s on
# the instance metadata service), `aws s3 sync DIR S3_URL` uploads what changed. On SIGTERM (the training
# ended) it syncs one last time and exits. The instance role gives the credentials. A training's dataset view
# (`<key>/data/`: links into data/raw and data/yolo, rebuilt on every run) is left out, and no link is
# followed: `aws s3 sync` would otherwise upload the linked image folders, once per split.
set -uo pipefail

dir=${1:?checkpoint folder}
url=${2:?s3:// URL}
every=${SYNC_EVERY:-60}
imds=http://169.254.169.254/latest

sync_now() {
  mkdir -p "$dir"
  aws s3 sync "$dir" "$url" --only-show-errors --no-progress --no-follow-symlinks --exclude '*.lock' \
    --exclude '*/data/*' ||
    echo "checkpoint-sync: upload failed; retrying at the next round" >&2
}

interrupted() {
  local token
  token=$(curl --silent --fail --max-time 2 --request PUT --header 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    "$imds/api/token") || return 1
  curl --silent --fail --max-time 2 --header "X-aws-ec2-metadata-token: $token" \
    "$imds/meta-data/spot/instance-action" >/dev/null
}

finish() {
  sync_now
  exit 0
}
trap finish TERM INT

last=$SECONDS
notice=false
while true; do
  sleep 5 &
  wait $! # a trap runs at once during `wait`, not only after `sleep`
  if [[ $notice == false ]] && interrupted; then
    notice=true
    echo "checkpoint-sync: spot interruption notice: syncing now, then every 15 s" >&2
    every=15
    last=0
  fi
  if ((SECONDS - last >= every)); then
    sync_now
    last=$SECONDS
  fi
done
