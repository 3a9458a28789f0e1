#!/usr/bin/env bash
# Build the service image of one torch variant and push it to ECR, whose tags are immutable (docs/aws.md): a tag,
# once pushed, always names the same image. Run by .github/workflows/ecr.yml, after the ECR login.
#
#   REGISTRY         <account>.dkr.ecr.<region>.amazonaws.com (the login step's output)                (required)
#   ECR_REPOSITORY   the image repository (default visapp)
#   ECR_CACHE_REPOSITORY  the BuildKit cache's repository, with mutable tags (default <ECR_REPOSITORY>-cache)
#   VARIANT          cpu | cu130: the torch build (the Dockerfile's TORCH_VARIANT)                          (required)
#   GITHUB_SHA, GITHUB_REF, GITHUB_REF_NAME   the commit, and the tag when a yolo@vX.Y.Z push runs it
#
#  1. <commit>-<variant>: built and pushed unless ECR has it already (a rerun, or the version tag's run of a commit
#     the main push built): then its digest is taken as it is. The build reads and writes its layer cache in the
#     cache repository (BuildKit's registry cache), so only the layers after a change are built again.
#  2. yolo-vX.Y.Z-<variant> (a version tag's run): added to that digest with put-image (no pull, no push of layers);
#     a tag that exists with the same digest is left alone, one that names another digest is an error.
set -euo pipefail

registry=${REGISTRY:?REGISTRY: the ECR registry host}
repository=${ECR_REPOSITORY:-visapp}
cache_repository=${ECR_CACHE_REPOSITORY:-$repository-cache}
variant=${VARIANT:?VARIANT: cpu or cu130}
commit=${GITHUB_SHA:?GITHUB_SHA: the commit to build}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

log() { printf 'ecr-image: %s\n' "$*" >&2; }
die() {
  printf '::error::%s\n' "$*" >&2
  exit 1
}

commit_tag="$commit-$variant"
version_tag=
if [[ "${GITHUB_REF:-}" == refs/tags/* ]]; then
  [[ "${GITHUB_REF_NAME:-}" =~ ^yolo@v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a version tag: ${GITHUB_REF_NAME:-}"
  version_tag="${GITHUB_REF_NAME/@/-}-$variant"
fi

digest_of() { # TAG -> the digest ECR holds for it; nothing when it has no such tag; any other error stops here
  local out
  if out=$(aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$1" \
    --query 'imageDetails[0].imageDigest' --output text 2>&1); then
    printf '%s\n' "$out"
  elif [[ "$out" != *ImageNotFoundException* ]]; then
    die "aws ecr describe-images $repository:$1: $out"
  fi
}

build() { # -> the digest pushed as $commit_tag; non-zero when the build or the push failed
  local metadata digest
  metadata=$(mktemp)
  docker buildx inspect visapp-builder >/dev/null 2>&1 ||
    docker buildx create --name visapp-builder --driver docker-container >/dev/null
  # --provenance=false: one image manifest per tag (no attestation index), as `docker pull` by digest expects.
  docker buildx build --builder visapp-builder --pull --provenance=false \
    --build-arg "TORCH_VARIANT=$variant" --build-arg "GIT_COMMIT=$commit" \
    --cache-from "type=registry,ref=$registry/$cache_repository:$variant" \
    --cache-to "type=registry,ref=$registry/$cache_repository:$variant,mode=max,image-manifest=true,oci-mediatypes=true" \
    --label "org.opencontainers.image.revision=$commit" \
    --label "org.opencontainers.image.source=${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-}" \
    --tag "$registry/$repository:$commit_tag" --push --metadata-file "$metadata" . >&2 || return 1
  digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "$metadata") ||
    return 1
  rm -f "$metadata"
  printf '%s\n' "$digest"
}

add_tag() { # TAG DIGEST: TAG names DIGEST afterwards, or the script stops saying why
  local tag=$1 digest=$2 existing manifest media_type
  existing=$(digest_of "$tag")
  if [[ "$existing" == "$digest" ]]; then
    log "$repository:$tag already names $digest"
    return
  fi
  [[ -z "$existing" ]] || die "$repository:$tag already names $existing, not $digest (this commit's image); tags \
are immutable: find out which build pushed it (the image's org.opencontainers.image.revision label)"
  manifest=$(aws ecr batch-get-image --repository-name "$repository" --image-ids "imageDigest=$digest" \
    --query 'images[0].imageManifest' --output text)
  media_type=$(aws ecr batch-get-image --repository-name "$repository" --image-ids "imageDigest=$digest" \
    --query 'images[0].imageManifestMediaType' --output text)
  aws ecr put-image --repository-name "$repository" --image-tag "$tag" --image-manifest "$manifest" \
    --image-manifest-media-type "$media_type" >/dev/null
  [[ "$(digest_of "$tag")" == "$digest" ]] || die "$repository:$tag does not name $digest after put-image"
  log "$repository:$tag -> $digest"
}

digest=$(digest_of "$commit_tag")
if [[ -n "$digest" ]]; then
  log "$repository:$commit_tag exists ($digest): not built again"
elif ! digest=$(build); then
  # Another run of the same commit may have pushed it meanwhile (the concurrency group keeps them apart; a manual
  # rerun does not): its image is as good as ours.
  digest=$(digest_of "$commit_tag")
  [[ -n "$digest" ]] || die "the build or the push of $repository:$commit_tag failed (see above)"
  log "$repository:$commit_tag was pushed by another run meanwhile ($digest): taken as it is"
else
  log "$repository:$commit_tag pushed ($digest)"
fi
[[ "$digest" == sha256:* ]] || die "no digest for $repository:$commit_tag: '$digest'"
if [[ -n "$version_tag" ]]; then add_tag "$version_tag" "$digest"; fi
printf '| %s | %s | %s |\n' "${version_tag:--}" "$commit_tag" "$digest" >>"$summary"
