#!/usr/bin/env bash
# Terminate VIS training runners that outlived their bound: the last net under the runner's own shutdown
# timer and the workflow's stop-runner job (.github/workflows/janitor.yml runs this every hour).
#
# A runner is an EC2 instance tagged vis-role=training-runner and vis-repository=$GITHUB_REPOSITORY. Its
# bound is its training's limit (tag vis-max-minutes) + SLACK_MINUTES (default 30), and never more than
# MAX_AGE_HOURS (default 26; the limit of train.yml is 24 h). Older ones are terminated; DRY_RUN=true only
# lists them. Credentials: the janitor role (OIDC), which can terminate only instances with these tags.
set -euo pipefail

repository=${GITHUB_REPOSITORY:?GITHUB_REPOSITORY: owner/name of the repository whose runners to clean}
slack=${SLACK_MINUTES:-30}
cap=$((${MAX_AGE_HOURS:-26} * 60))
dry_run=${DRY_RUN:-false}
now=${NOW_EPOCH:-$(date -u +%s)}

# The backquotes are a JMESPath literal, not a shell expansion.
# shellcheck disable=SC2016
listing=$(aws ec2 describe-instances \
  --filters Name=tag:vis-role,Values=training-runner "Name=tag:vis-repository,Values=$repository" \
  Name=instance-state-name,Values=pending,running,stopping,stopped \
  --query 'Reservations[].Instances[].[InstanceId, LaunchTime, Tags[?Key==`vis-max-minutes`] | [0].Value]' \
  --output text)
mapfile -t rows <<<"$listing"

stale=()
for row in "${rows[@]}"; do
  [[ -n "$row" ]] || continue
  read -r id launched limit <<<"$row"
  bound=$cap
  if [[ "$limit" =~ ^[0-9]+$ ]] && ((limit + slack < cap)); then bound=$((limit + slack)); fi
  age=$(((now - $(date -u -d "$launched" +%s)) / 60))
  if ((age > bound)); then
    echo "$id: launched $launched, $age min ago, bound $bound min: stale"
    stale+=("$id")
  else
    echo "$id: $age of $bound min"
  fi
done

if ((${#stale[@]} == 0)); then
  echo "no stale runner"
elif [[ "$dry_run" == true ]]; then
  echo "DRY_RUN: would terminate ${stale[*]}"
else
  aws ec2 terminate-instances --instance-ids "${stale[@]}" --output text >/dev/null
  echo "terminated ${stale[*]}"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then echo "terminated stale runners: ${stale[*]}" >>"$GITHUB_STEP_SUMMARY"; fi
fi
