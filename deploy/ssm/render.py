"""Write deploy/ssm/visapp-rollout.json, the SSM Command document that runs deploy/rollout.sh on an instance.

The document carries the script itself (base64, so that SSM's `{{ parameter }}` substitution never touches the
script's own braces), so one document version is one version of the script: `deploy.yml` uploads the
document as a new version and runs exactly that version. Run this after editing deploy/rollout.sh:

    python deploy/ssm/render.py

(tests/delivery checks that the committed document is what this writes.)
"""

from __future__ import annotations

import base64
import json
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "rollout.sh"
DOCUMENT = HERE / "visapp-rollout.json"
MARKER = "VISAPP_ROLLOUT_SH"

# SSM substitutes these into the command text: each value is held to a pattern that cannot leave its quotes.
PARAMETERS = {
    "image": {
        "type": "String",
        "description": "The image to run, by digest: <registry>/<repository>@sha256:<digest>",
        "allowedPattern": r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[a-f0-9]{64}$",
    },
    "role": {
        "type": "String",
        "description": "Which container: the HTTP API (api) or a training worker (worker)",
        "allowedValues": ["api", "worker"],
    },
    "port": {
        "type": "String",
        "description": "Host port of the API; /health is polled there",
        "default": "8000",
        "allowedPattern": r"^[0-9]{2,5}$",
    },
    "healthTimeout": {
        "type": "String",
        "description": "Seconds the new container has to become healthy before the rollback",
        "default": "180",
        "allowedPattern": r"^[0-9]{1,4}$",
    },
    "configPath": {
        "type": "String",
        "description": "SSM Parameter Store path whose parameters become the container's environment (empty: none)",
        "default": "/visapp/prod",
        "allowedPattern": r"^(/[A-Za-z0-9_.-]+)*$",
    },
    "modelVersion": {
        "type": "String",
        "description": "The promoted model version (yolo@vN.0.0), passed to the container as VISAPP_MODEL_VERSION",
        "default": "",
        "allowedPattern": r"^(yolo@v[0-9]+\.[0-9]+\.[0-9]+)?$",
    },
}


def render() -> dict:
    encoded = textwrap.wrap(base64.b64encode(SCRIPT.read_bytes()).decode("ascii"), 76)
    run_command = [
        "set -eu",
        "script=$(mktemp)",
        "trap 'rm -f \"$script\"' EXIT",
        f"base64 -d >\"$script\" <<'{MARKER}'",
        *encoded,
        MARKER,
        "VISAPP_IMAGE='{{ image }}' VISAPP_ROLE='{{ role }}' VISAPP_PORT='{{ port }}' "
        "VISAPP_HEALTH_TIMEOUT='{{ healthTimeout }}' VISAPP_CONFIG_PATH='{{ configPath }}' "
        "VISAPP_MODEL_VERSION='{{ modelVersion }}' bash \"$script\"",
    ]
    return {
        "schemaVersion": "2.2",
        "description": (
            "VIS: roll the API or a worker container out on this instance (pull by digest, start, poll health), "
            "rolling back to the previous container when the new one is unhealthy. Generated from "
            "deploy/rollout.sh by deploy/ssm/render.py: edit those, not this file."
        ),
        "parameters": PARAMETERS,
        "mainSteps": [
            {
                "action": "aws:runShellScript",
                "name": "rollout",
                "precondition": {"StringEquals": ["platformType", "Linux"]},
                "inputs": {"timeoutSeconds": "900", "runCommand": run_command},
            }
        ],
    }


def text() -> str:
    return json.dumps(render(), indent=2) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(text())
    sys.stdout.write(f"wrote {DOCUMENT.relative_to(HERE.parent.parent)}\n")
