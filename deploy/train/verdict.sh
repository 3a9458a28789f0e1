#!/usr/bin/env bash
# Judge one training attempt (.github/workflows/train-attempt.yml, job `verdict`): finished, taken back by spot, or
# failed. Writes retry=true|false to $GITHUB_OUTPUT; exits 1 only when the training failed, so that the run's colour
# says whether the training succeeded: a spot runner that never started (no capacity) or was reclaimed is not a
# failure of the training, and train-point.yml resumes the point on demand, whose own verdict then decides.
#
#   FINISHED     "true" when the train job reached its last step
#   SPOT         "true" when this attempt ran on spot
#   READY        "true" when the runner started and registered (start-runner's last step)
#   INSTANCE_ID  the runner's EC2 instance, if one was launched
set -euo pipefail

output=${GITHUB_OUTPUT:-/dev/stdout}

if [[ "${FINISHED:-}" == true ]]; then
  echo "retry=false" >>"$output"
  exit 0
fi
reason=
if [[ "${SPOT:-}" == true && "${READY:-}" != true ]]; then
  reason="no spot runner started (no spot capacity, or the instance never registered)"
elif [[ "${SPOT:-}" == true && -n "${INSTANCE_ID:-}" ]]; then
  code=$(aws ec2 describe-instances --instance-ids "$INSTANCE_ID" \
    --query 'Reservations[0].Instances[0].StateReason.Code' --output text || echo unknown)
  if [[ "$code" == Server.SpotInstanceTermination ]]; then reason="spot took $INSTANCE_ID back"; fi
fi
if [[ -n "$reason" ]]; then
  echo "::warning::${reason}: the point resumes from its checkpoint on an on-demand runner"
  echo "retry=true" >>"$output"
  exit 0
fi
echo "retry=false" >>"$output"
if [[ "${READY:-}" != true ]]; then
  echo "::error::the runner did not start (see the start-runner job)"
else
  echo "::error::the training did not finish (see the train job)"
fi
exit 1
