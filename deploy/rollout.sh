#!/usr/bin/env bash
# Roll one VIS service container (the API or a worker) out on this instance, or roll it back.
#
# Run by the SSM document deploy/ssm/visapp-rollout.json (AWS Systems Manager Run Command: no SSH, no port
# opened for deployment), one instance at a time, by .github/workflows/deploy.yml. The instance keeps no
# state: the image comes from ECR by digest, the configuration from SSM Parameter Store, the promoted model
# and the data from the DVC remote and the job store on S3 (the container reads them at start).
#
#   VISAPP_IMAGE            the image to run, by digest: <registry>/<repository>@sha256:<64 hex>   (required)
#   VISAPP_ROLE             api | worker                                                            (required)
#   VISAPP_PORT             host port of the API (default 8000); /health is polled there
#   VISAPP_HEALTH_TIMEOUT   seconds the new container has to become healthy (default 180)
#   VISAPP_HEALTH_INTERVAL  seconds between two polls (default 3)
#   VISAPP_CONFIG_PATH      SSM Parameter Store path whose parameters become the container's environment
#                           (e.g. /visapp/prod: VISAPP_API_TOKEN, VISAPP_QUEUE_URL, VISAPP_STORE_URL, ...)
#   VISAPP_MODEL_VERSION    the promoted model version (yolo@vN.0.0), passed to the container
#   VISAPP_GPUS             value of `docker run --gpus` for a worker (default all; empty: no GPU flag)
#   VISAPP_SHM_SIZE         a worker's /dev/shm (default 8g): PyTorch's data loader workers pass batches through
#                           shared memory, and Docker's default of 64 MB stops them ("bus error")
#
# Healthy: the API answers 2xx on /health with a top-level "ok": true (store, queue and tracking reachable)
# and, when VISAPP_MODEL_VERSION is set, serves that version: /health's top-level "model" is
# {"version": "yolo@vN.0.0", ...} (null while it serves none); a worker is still running, never restarted, after
# the grace period (VISAPP_HEALTH_TIMEOUT, at most 60 s).
# Unhealthy: the new container is removed, the previous one is renamed back and started, and the script
# exits 1 (so the Run Command fails and the workflow stops before the next instance).
set -euo pipefail

log() { printf '%s visapp-rollout: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "error: $*"
  exit 2
}

image=${VISAPP_IMAGE:?VISAPP_IMAGE: the image to run, by digest}
role=${VISAPP_ROLE:?VISAPP_ROLE: api or worker}
port=${VISAPP_PORT:-8000}
timeout=${VISAPP_HEALTH_TIMEOUT:-180}
interval=${VISAPP_HEALTH_INTERVAL:-3}
gpus=${VISAPP_GPUS-all}
shm_size=${VISAPP_SHM_SIZE:-8g}
model_version=${VISAPP_MODEL_VERSION:-}

case "$role" in api | worker) ;; *) die "VISAPP_ROLE must be api or worker, not '$role'" ;; esac
[[ "$image" =~ ^[A-Za-z0-9.:/_-]+@sha256:[a-f0-9]{64}$ ]] || die "VISAPP_IMAGE must name an image by digest (...@sha256:<64 hex>), not '$image'"
[[ "$port" =~ ^[0-9]{1,5}$ && "$timeout" =~ ^[0-9]+$ && "$interval" =~ ^[0-9]+$ ]] || die "port and timeouts are whole numbers"
[[ "$shm_size" =~ ^[0-9]+[bkmg]?$ ]] || die "VISAPP_SHM_SIZE must be a size such as 8g, not '$shm_size'"
[[ -z "$model_version" || "$model_version" =~ ^yolo@v[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  die "VISAPP_MODEL_VERSION must be a version such as yolo@v3.0.0, not '$model_version'"

name="visapp-$role"
previous="$name-previous"
registry=${image%%/*}
env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT

exists() { docker inspect --type container "$1" >/dev/null 2>&1; }

# --- 1. the image: ECR login with the instance role, then pull by digest --------------------------------------
if [[ "$registry" =~ ^[0-9]+\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]]; then
  region=${BASH_REMATCH[1]}
  log "ECR login to $registry (instance role)"
  aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry" >/dev/null
fi
log "pulling $image"
docker pull --quiet "$image" >/dev/null

# --- 2. the configuration: SSM Parameter Store -> an env file that lives only as long as this script -----------
chmod 600 "$env_file"
if [[ -n "${VISAPP_CONFIG_PATH:-}" ]]; then
  log "configuration from SSM Parameter Store $VISAPP_CONFIG_PATH"
  aws ssm get-parameters-by-path --path "$VISAPP_CONFIG_PATH" --with-decryption \
    --query 'Parameters[].[Name,Value]' --output text |
    while IFS=$'\t' read -r key value; do printf '%s=%s\n' "${key##*/}" "$value"; done >"$env_file"
fi
if [[ -n "$model_version" ]]; then
  printf 'VISAPP_MODEL_VERSION=%s\n' "$model_version" >>"$env_file"
fi

# --- 3. set the running container aside (stopped, kept for a rollback) -------------------------------------------
if exists "$previous"; then
  log "removing $previous left by an earlier rollout"
  docker rm --force "$previous" >/dev/null
fi
if exists "$name"; then
  log "stopping $name and keeping it as $previous"
  docker stop --time 30 "$name" >/dev/null
  docker rename "$name" "$previous"
fi

rollback() {
  log "rolling back: $*"
  if exists "$name"; then
    docker logs --tail 50 "$name" >&2 || true
    docker rm --force "$name" >/dev/null
  fi
  if exists "$previous"; then
    docker rename "$previous" "$name"
    docker start "$name" >/dev/null
    log "the previous container runs again as $name"
  else
    log "there was no previous container: nothing runs as $name now"
  fi
  exit 1
}

# --- 4. start the new one -------------------------------------------------------------------------------------------
args=(--detach --name "$name" --restart unless-stopped --env-file "$env_file" --label "vis.role=$role")
if [[ "$role" == api ]]; then
  args+=(--publish "$port:8000")
  command=(serve --host 0.0.0.0 --port 8000 --no-worker)
else
  [[ -n "$gpus" ]] && args+=(--gpus "$gpus")
  args+=(--shm-size "$shm_size")
  command=(worker)
fi
log "starting $name from $image"
docker run "${args[@]}" "$image" "${command[@]}" >/dev/null || rollback "docker run failed"

# --- 5. healthy, or back to the previous container --------------------------------------------------------------
served=
healthy_api() { # /health answers "ok": true, and serves the promoted version when there is one
  local body
  body=$(curl --silent --show-error --fail --max-time 5 "http://127.0.0.1:$port/health" 2>/dev/null) || return 1
  served=$(python3 -c '
import json, sys
body = json.loads(sys.argv[1])
model = body.get("model") if isinstance(body, dict) else None
version = model.get("version") if isinstance(model, dict) else None
print("ok" if isinstance(body, dict) and body.get("ok") is True else "not-ok", version or "none")
' "$body" 2>/dev/null) || return 1
  [[ "$served" == "ok "* ]] || return 1
  [[ -z "$model_version" || "$served" == "ok $model_version" ]]
}

running() { [[ "$(docker inspect --format '{{.State.Running}} {{.RestartCount}}' "$name" 2>/dev/null)" == "true 0" ]]; }

deadline=$((SECONDS + timeout))
if [[ "$role" == api ]]; then
  until healthy_api; do
    running || rollback "$name stopped or restarted before it was healthy"
    if ((SECONDS >= deadline)); then
      [[ "$served" == "ok "* && -n "$model_version" ]] &&
        rollback "$name serves model ${served#ok }, not the promoted $model_version, after ${timeout}s"
      rollback "$name not healthy on :$port/health within ${timeout}s"
    fi
    sleep "$interval"
  done
else
  # A worker serves nothing: it is healthy when it is still up, never restarted, after the grace period.
  grace=$((timeout < 60 ? timeout : 60))
  deadline=$((SECONDS + grace))
  while ((SECONDS < deadline)); do
    running || rollback "$name stopped or restarted within ${grace}s"
    sleep "$interval"
  done
  running || rollback "$name stopped or restarted within ${grace}s"
fi

log "$name is healthy on $image"
if exists "$previous"; then
  docker rm --force "$previous" >/dev/null
  log "removed $previous"
fi
