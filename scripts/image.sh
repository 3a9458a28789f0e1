#!/usr/bin/env bash
# `make image`: build the Dockerfile on a machine without a container daemon or a registry, then check the image
# from inside, as its non-root user. Not part of `make test` (it downloads or copies gigabytes: torch and its CUDA
# libraries): run it after a change to the Dockerfile, scripts/install.sh or the dependencies.
#
#   scripts/image.sh [VARIANT...]      VARIANT: pypi (default: torch from pip's configured index, PyPI's CUDA build),
#                                      cpu or cu130 (torch from the PyTorch index, which must be reachable)
#
# How, on a Debian or Ubuntu machine as root (it installs what it lacks with apt-get):
#   - buildah (Debian's package) with chroot isolation: no daemon, no privileges beyond root's own, storage on disk;
#   - the base: Debian bookworm made with debootstrap (python3.11, python3-venv, python-is-python3), standing in for
#     the Dockerfile's pinned python:3.11-slim-bookworm (passed as PYTHON_IMAGE), since no registry may be reachable;
#   - pip inside the build trusts what this machine trusts: its CA bundle and a pip.conf naming it (with the local
#     wheel folders or file:// indexes this machine's pip uses, mounted read-only at their paths) are volumes of the
#     RUN steps only, never layers of the image; the checks below make sure of it;
#   - `--format docker`: buildah's default OCI format has no HEALTHCHECK and would drop the image's.
# Then, in each image, as user 10001: `visapp --help`, `visapp doctor`, `visapp serve` answering /health on loopback,
# and the image's own HEALTHCHECK command, in a PID namespace of its own where the server is not PID 1.
#
#   IMAGE_MIN_FREE_GB   stop, and remove what the build wrote, when the disk's free space falls under this (15)
#   IMAGE_KEEP          1: keep the images afterwards (default: removed, with the base and the build cache)
#   IMAGE_LOG_DIR       where the build logs go (.cache/image)
#   DEBIAN_MIRROR       debootstrap's mirror (http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

variants=("${@:-pypi}")
min_free_gb=${IMAGE_MIN_FREE_GB:-15}
log_dir=${IMAGE_LOG_DIR:-.cache/image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_image=localhost/vis-python-base:bookworm
scratch=$(mktemp -d)
mkdir -p "$log_dir"

say() { printf 'image: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}
free_gb() { df --output=avail -B1G /var/lib/containers "$PWD" 2>/dev/null | tail -n +2 | sort -n | head -n 1 | tr -d ' '; }

[[ "$(id -u)" == 0 ]] || die "run as root: buildah's chroot isolation and debootstrap need it"
for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    say "installing $tool (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done
mkdir -p /var/lib/containers
((${IMAGE_SKIP_SPACE_CHECK:-0} || $(free_gb) >= min_free_gb + 20)) ||
  die "$(free_gb) GB free: an image with CUDA torch needs about 20 GB more than the ${min_free_gb} GB kept free"

made_images=()
cleanup() {
  local status=$?
  buildah rm --all >/dev/null 2>&1 || true
  if [[ "${IMAGE_KEEP:-0}" != 1 ]]; then
    for image in "${made_images[@]}"; do buildah rmi --force "$image" >/dev/null 2>&1 || true; done
    buildah rmi --prune --force >/dev/null 2>&1 || true
  fi
  rm -rf "$scratch"
  exit "$status"
}
trap cleanup EXIT

# Runs "$@" in the background and stops it when free space falls under the floor: exit 75 then.
guarded() {
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if (($(free_gb) < min_free_gb)); then
      say "free space is $(free_gb) GB, under ${min_free_gb} GB: stopping $1"
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 75
    fi
    sleep 5
  done
  wait "$pid"
}

# --- the base: Debian bookworm with its python3.11 ----------------------------------------------------------------
started=$SECONDS
if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
  say "base: debootstrap bookworm into a scratch container"
  container=$(buildah from scratch)
  root=$(buildah mount "$container")
  guarded debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >"$log_dir/debootstrap.log" 2>&1 || die "debootstrap failed: $log_dir/debootstrap.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  buildah unmount "$container" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$container"
  buildah commit --quiet --format docker "$container" "$base_image" >/dev/null
  buildah rm "$container" >/dev/null
  made_images+=("$base_image")
  say "base: $base_image in $((SECONDS - started)) s"
fi

# --- what pip inside the build trusts and reads ---------------------------------------------------------------------
ca_bundle=${IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
volumes=(-v "$ca_bundle:/run/vis-build/ca.crt:ro" -v "$scratch/pip.conf:/etc/pip.conf:ro")
python3 - "$scratch/pip.conf" >"$scratch/local-paths" <<'EOF'
import subprocess, sys
from urllib.parse import urlsplit

listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings = {}
for line in listed.splitlines():
    key, _, value = line.partition("=")
    settings.setdefault(key.split(".", 1)[1], value.strip("'\""))
lines, paths = ["[global]", "cert = /run/vis-build/ca.crt"], set()
for key in ("index-url", "extra-index-url", "find-links", "constraint"):
    if key in settings:
        lines.append(f"{key} = {settings[key]}")
        for item in settings[key].split():
            path = urlsplit(item).path if item.startswith("file:") else item
            if path.startswith("/"):
                paths.add(path.rstrip("/").rsplit("/simple", 1)[0])
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(sorted(paths)))
EOF
while read -r path; do [[ -e "$path" ]] && volumes+=(-v "$path:$path:ro"); done <"$scratch/local-paths"

# --- each variant: build, then check from inside ----------------------------------------------------------------
report=()
for variant in "${variants[@]}"; do
  case "$variant" in
    pypi) build_args=(--build-arg TORCH_VARIANT=cu130 --build-arg TORCH_INDEX_URL=) ;;
    cpu | cu130) build_args=(--build-arg "TORCH_VARIANT=$variant") ;;
    *) die "unknown variant '$variant': pypi, cpu or cu130" ;;
  esac
  tag=localhost/visapp:$variant
  started=$SECONDS
  say "$variant: building $tag (log: $log_dir/build-$variant.log)"
  status=0
  guarded buildah build --isolation chroot --format docker --layers --pull=never \
    --build-arg "PYTHON_IMAGE=$base_image" --build-arg "GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)" \
    "${build_args[@]}" \
    "${volumes[@]}" --tag "$tag" . >"$log_dir/build-$variant.log" 2>&1 || status=$?
  seconds=$((SECONDS - started))
  if ((status != 0)); then
    step=$(grep -E '^STEP [0-9]+/[0-9]+' "$log_dir/build-$variant.log" | tail -n 1 || true)
    report+=("$variant: FAILED after ${seconds} s at ${step:-its start} (exit $status; $log_dir/build-$variant.log)")
    continue
  fi
  made_images+=("$tag")
  size=$(buildah images --format '{{.Size}}' "$tag" | head -n 1)
  say "$variant: built in ${seconds} s, $size"

  # The HEALTHCHECK as the image declares it (["CMD", ...]); none in an OCI-format image.
  health=$(buildah inspect --type image "$tag" | python3 -c '
import json, sys
def find(node):
    if isinstance(node, dict):
        for key, value in node.items():
            found = value.get("Test") if key == "Healthcheck" and isinstance(value, dict) else find(value)
            if found:
                return found
    return None
print(json.dumps(find(json.load(sys.stdin))))')
  [[ "$health" == *healthcheck.py* ]] || die "$tag has no HEALTHCHECK ($health): was it built with --format docker?"
  container=$(buildah from --pull=never "$tag")
  in_image() { buildah run --isolation chroot --user 10001:10001 "$container" -- "$@"; }
  in_image sh -c '! test -s /etc/pip.conf && ! test -s /run/vis-build/ca.crt' ||
    die "$tag holds the build's pip.conf or CA bundle"
  # shellcheck disable=SC2016 # expanded in the image, not here
  in_image sh -c '[ "$(id -u)" = 10001 ]' || die "$tag does not run as user 10001"
  in_image visapp --help >/dev/null || die "$tag: visapp --help failed"
  in_image visapp doctor || die "$tag: visapp doctor failed"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # One shell in a PID namespace of its own (PID 1 there is unshare's child, not the server): the server in the
  # background, /health asked on loopback, then the image's HEALTHCHECK command, exactly as the image declares it.
  check=$(python3 -c 'import json, shlex, sys; print(shlex.join(json.loads(sys.argv[1])[1:]))' "$health")
  unshare --pid --fork --mount-proc buildah run --isolation chroot --user 10001:10001 \
    --env VISAPP_API_TOKEN=image-check-token "$container" -- sh -c "
      cd /tmp && visapp serve --host 127.0.0.1 --port $port --no-worker >/tmp/serve.log 2>&1 &
      server=\$!
      ok=
      for i in \$(seq 1 90); do
        python -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
          http://127.0.0.1:$port/health 2>/dev/null && ok=1 && break
        sleep 2
      done
      [ -n \"\$ok\" ] || { echo 'no answer on /health:'; cat /tmp/serve.log; exit 1; }
      echo \"PID 1 here: \$(tr '\\0' ' ' </proc/1/cmdline | cut -c1-60)...; the server: \$server\"
      $check && echo 'HEALTHCHECK: healthy' || { echo 'HEALTHCHECK: unhealthy'; exit 1; }
      kill \$server; wait \$server; true" || die "$tag: visapp serve or its HEALTHCHECK failed"
  buildah rm "$container" >/dev/null
  report+=("$variant: built in ${seconds} s, $size ($tag); checks passed")
done
printf '%s\n' "${report[@]}"
[[ "${report[*]}" != *FAILED* ]]
