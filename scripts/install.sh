#!/usr/bin/env bash
# The one install recipe of VIS, shared by `make install` (.venv, editable, with the dev tools) and the Dockerfile
# (/opt/venv in the image), so that both get the same torch, the same packages and the same OpenCV.
#
#   scripts/install.sh PYTHON [PIP_ARGS...]
#
#   PYTHON     the python of the environment to install into (the caller creates it: python3 -m venv DIR)
#   PIP_ARGS   what to install after torch, as for `pip install`: -e '.[dev]' (make install), -e . (the image);
#              none: torch alone (the Dockerfile's cached layer)
#   TORCH_INDEX_URL   where torch and torchvision come from (default: pip's configured index; the Dockerfile sets
#              https://download.pytorch.org/whl/<variant>, e.g. .../whl/cpu or .../whl/cu130)
set -euo pipefail

# torch first, pinned: pip takes the CPU machines' local wheels; elsewhere it downloads this release.
TORCH=(torch==2.14.1 torchvision==0.29.1)

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PYTHON [PIP_ARGS...]" >&2
  exit 2
fi
py=$1
shift

"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH[@]}"
[[ $# -eq 0 ]] && exit 0

"$py" -m pip install --quiet "$@"
# Ultralytics requires opencv-python (GUI build); servers and Docker want the headless one. Both install into cv2/,
# so drop the GUI one and reinstall headless over what it left.
"$py" -m pip uninstall --quiet -y opencv-python
"$py" -m pip install --quiet --force-reinstall --no-deps \
  "opencv-python-headless==$("$py" -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"
# Versions from the metadata: importing Ultralytics here would write its settings into the user's HOME.
"$py" -c 'import cv2, importlib.metadata as m; print("cv2", cv2.__version__, *(f"{p} {m.version(p)}" for p in ("torch", "ultralytics", "dvc", "mlflow")))'
# What made this environment: the recipe's hash and its arguments (the tests check that the suite runs in an
# environment this very recipe made, as the image's is).
printf '%s %s\n' "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)" "$*" >"$("$py" -c 'import sys; print(sys.prefix)')/visapp-install.txt"
