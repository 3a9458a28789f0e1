#!/usr/bin/env bash
# The one install recipe of VIS, shared by `make install` (.venv, editable, with the dev tools) and the Dockerfile
# (/opt/venv in the image), so that both get the same torch, the same packages and the same OpenCV.
#
#   scripts/install.sh PYTHON [PIP_ARGS...]
#   scripts/install.sh PYTHON --dependencies-of PYPROJECT
#
#   PYTHON     the python of the environment to install into (the caller creates it: python3 -m venv DIR)
#   PIP_ARGS   what to install after torch, as for `pip install`: -e '.[dev]' (make install), --no-deps -e . (the
#              image's last layer); none: torch alone (the Dockerfile's first, cached layer)
#   --dependencies-of PYPROJECT   the dependencies that pyproject.toml lists, not the package itself: the image's
#              layer that changes with the dependencies, not with the code
#   TORCH_INDEX_URL   where torch and torchvision come from (default: pip's configured index, PyPI, whose Linux
#              torch is the CUDA build: about 3 GB of NVIDIA libraries). https://download.pytorch.org/whl/cpu gives the
#              CPU build (no CUDA libraries); the Dockerfile sets .../whl/<TORCH_VARIANT> unless told otherwise.
#
# It prints a line per step and pip's own progress (downloads, builds, installs), so a long install shows it is alive.
set -euo pipefail

# torch first, pinned: pip takes the CPU machines' local wheels; elsewhere it downloads this release.
TORCH=(torch==2.14.1 torchvision==0.29.1)

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PYTHON [PIP_ARGS...] | PYTHON --dependencies-of PYPROJECT" >&2
  exit 2
fi
py=$1
shift

started=$SECONDS
step() { printf '\ninstall.sh [%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }

step "pip itself"
"$py" -m pip install --quiet --upgrade pip
step "${TORCH[*]} from ${TORCH_INDEX_URL:-the configured index} (the largest download)"
"$py" -m pip install --progress-bar on ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH[@]}"
[[ $# -eq 0 ]] && exit 0

if [[ "$1" == --dependencies-of ]]; then
  pyproject=${2:?--dependencies-of needs the path of a pyproject.toml}
  mapfile -t dependencies < <("$py" -c \
    'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"], sep="\n")' "$pyproject")
  set -- "${dependencies[@]}"
  step "the ${#dependencies[@]} dependencies of $pyproject (not the package)"
else
  step "$*"
fi
"$py" -m pip install --progress-bar on "$@"

# Ultralytics requires opencv-python (GUI build); servers and Docker want the headless one. Both install into cv2/,
# so drop the GUI one and reinstall headless over what it left (when pip brought the GUI one in this run or before).
if "$py" -c 'import importlib.metadata as m; m.version("opencv-python")' 2>/dev/null; then
  step "opencv-python (GUI) swapped for opencv-python-headless"
  "$py" -m pip uninstall --quiet -y opencv-python
  "$py" -m pip install --quiet --force-reinstall --no-deps \
    "opencv-python-headless==$("$py" -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"
fi
# Versions from the metadata: importing Ultralytics here would write its settings into the user's HOME.
step "done in $((SECONDS - started)) s"
"$py" -c 'import cv2, importlib.metadata as m; print("cv2", cv2.__version__, *(f"{p} {m.version(p)}" for p in ("torch", "ultralytics", "dvc", "mlflow")))'
# What made this environment: the recipe's hash and its arguments (the tests check that the suite runs in an
# environment this very recipe made, as the image's is).
printf '%s %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)" "$*" >"$("$py" -c 'import sys; print(sys.prefix)')/visapp-install.txt"
