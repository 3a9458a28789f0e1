#!/usr/bin/env bash
# Roll the promoted model's service out to the production instances, one instance at a time, with AWS
# Systems Manager Run Command (no SSH, no port opened for it). Run by .github/workflows/deploy.yml on a GTO
# promotion tag yolo#prod#N, from a checkout of that tag.
#
#  1. the version: the yolo@vX.Y.Z tag on the promoted commit (a stage tag alone names no version);
#  2. the images: ecr.yml built <commit>-cpu (the API) and <commit>-cu130 (the workers) on the push of that
#     commit; they are taken by digest, waiting for the build if it still runs (DEPLOY_IMAGE_WAIT, 1800 s);
#  3. the document: deploy/ssm/visapp-rollout.json of this commit becomes a version of the SSM document
#     (its hash checked), and exactly that version runs;
#  4. the instances: running, tagged vis-service=api|worker and vis-env=$DEPLOY_ENV; the API first, then the
#     workers; each one is rolled out and waited for (deploy/rollout.sh there: pull by digest, start, health,
#     or roll back and fail) before the next. The first failure stops the rollout: the instances not yet
#     reached keep the previous version, the failed one has rolled itself back.
#
# The service reads the promoted model from the DVC remote when it starts: nothing else goes to the instance.
set -euo pipefail

tag=${DEPLOY_TAG:-${GITHUB_REF_NAME:?the promotion tag, yolo#prod#N}}
environment=${DEPLOY_ENV:-prod}
repository=${ECR_REPOSITORY:-visapp}
document=${SSM_DOCUMENT:-visapp-rollout}
document_file=${SSM_DOCUMENT_FILE:-deploy/ssm/visapp-rollout.json}
config_path=${VISAPP_CONFIG_PATH-/visapp/$environment}
image_wait=${DEPLOY_IMAGE_WAIT:-1800}
command_wait=${DEPLOY_COMMAND_WAIT:-1200}
poll=${DEPLOY_POLL_SECONDS:-10}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

log() { printf 'deploy: %s\n' "$*" >&2; }
die() {
  printf '::error::%s\n' "$*" >&2
  exit 1
}

[[ "$tag" =~ ^yolo#${environment}#[0-9]+$ ]] || die "'$tag' is not a promotion tag yolo#${environment}#N"

# --- 1. the version ---------------------------------------------------------------------------------------------
commit=$(git rev-parse "refs/tags/$tag^{commit}")
version=$(git tag --points-at "$commit" --list 'yolo@v*' | sort -V | tail -n 1)
[[ -n "$version" ]] || die "no yolo@v* tag on $commit: push the version's tag with its stage (visapp release --push)"
log "$tag promotes $version (commit $commit)"

# --- 2. the images, by digest -----------------------------------------------------------------------------------
uri=$(aws ecr describe-repositories --repository-names "$repository" \
  --query 'repositories[0].repositoryUri' --output text)
digest_of() { # TAG -> sha256:..., waiting for ecr.yml
  local waited=0 digest
  until digest=$(aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$1" \
    --query 'imageDetails[0].imageDigest' --output text 2>/dev/null) && [[ "$digest" == sha256:* ]]; do
    ((waited < image_wait)) || die "no image $repository:$1 after ${image_wait}s: did ecr.yml build $commit?"
    log "waiting for $repository:$1 (ecr.yml)"
    sleep "$poll"
    waited=$((waited + poll))
  done
  printf '%s\n' "$digest"
}
declare -A image
image[api]="$uri@$(digest_of "$commit-${DEPLOY_API_VARIANT:-cpu}")"
image[worker]="$uri@$(digest_of "$commit-${DEPLOY_WORKER_VARIANT:-cu130}")"

# --- 3. the SSM document of this commit, as a version of its own ------------------------------------------------
doc_version=$(aws ssm update-document --name "$document" --content "file://$document_file" \
  --document-format JSON --document-version "\$LATEST" \
  --query 'DocumentDescription.DocumentVersion' --output text 2>/dev/null) ||
  doc_version=$(aws ssm describe-document --name "$document" --query 'Document.LatestVersion' --output text)
stored=$(aws ssm get-document --name "$document" --document-version "$doc_version" --document-format JSON \
  --query 'Content' --output text)
python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.load(open(sys.argv[2])))' \
  "$stored" "$document_file" ||
  die "SSM document $document version $doc_version is not $document_file of this commit (update-document refused?)"
log "SSM document $document version $doc_version"

{
  echo "### $tag: $version"
  echo
  echo "| instance | role | result |"
  echo "| --- | --- | --- |"
} >>"$summary"

# --- 4. one instance at a time ------------------------------------------------------------------------------------
rollout() { # ROLE INSTANCE
  local role=$1 instance=$2 command_id status waited=0 parameters
  parameters=$(printf '{"image":["%s"],"role":["%s"],"configPath":["%s"],"modelVersion":["%s"]}' \
    "${image[$role]}" "$role" "$config_path" "$version")
  command_id=$(aws ssm send-command --document-name "$document" --document-version "$doc_version" \
    --instance-ids "$instance" --parameters "$parameters" --timeout-seconds 600 \
    --comment "$tag $version $role" --query 'Command.CommandId' --output text)
  log "$instance ($role): command $command_id"
  while true; do
    sleep "$poll"
    waited=$((waited + poll))
    status=$(aws ssm get-command-invocation --command-id "$command_id" --instance-id "$instance" \
      --query 'Status' --output text 2>/dev/null || echo Pending)
    case "$status" in
      Pending | InProgress | Delayed) ;;
      *) break ;;
    esac
    ((waited < command_wait)) || { status="TimedOut (waited ${command_wait}s)" && break; }
  done
  echo "| $instance | $role | $status |" >>"$summary"
  if [[ "$status" != Success ]]; then
    aws ssm get-command-invocation --command-id "$command_id" --instance-id "$instance" \
      --query '[StandardOutputContent, StandardErrorContent]' --output text >&2 || true
    die "$instance ($role): $status; it rolled back to its previous container. Stopping here: the instances not reached keep the previous version."
  fi
  log "$instance ($role): $version is live"
}

reached=0
for role in api worker; do
  ids=$(aws ec2 describe-instances \
    --filters "Name=tag:vis-service,Values=$role" "Name=tag:vis-env,Values=$environment" \
    Name=instance-state-name,Values=running \
    --query 'Reservations[].Instances[].InstanceId' --output text)
  mapfile -t instances < <(tr '\t' '\n' <<<"$ids" | sed '/^$/d' | sort)
  ((${#instances[@]} > 0)) || log "no running $role instance tagged vis-env=$environment"
  for instance in "${instances[@]}"; do
    rollout "$role" "$instance"
    reached=$((reached + 1))
  done
done
((reached > 0)) || die "no running instance tagged vis-service=api|worker and vis-env=$environment"
log "$version is live on every instance"
