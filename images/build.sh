#!/usr/bin/env bash
# Build, push or list the kolora-<image> container images (images/Dockerfile, --build-arg IMAGE=<image>).
#
#   images/build.sh [build] [IMAGE...]   build (default: every image), tagged localhost/kolora-<image>:<TAG>
#                                        (and <REGISTRY>/kolora-<image>:<TAG> when REGISTRY is set)
#   images/build.sh push [IMAGE...]      build, then push <REGISTRY>/kolora-<image>:<TAG> (REGISTRY required)
#   images/build.sh sizes [IMAGE...]     the size table of the built images (Markdown)
#
# Environment:
#   TAG                    image tag (default: the project version in pyproject.toml; never `latest`)
#   REGISTRY               e.g. ghcr.io/you (default: localhost, which is what `kolora run --engine podman|docker`
#                          finds with -p image-registry=localhost)
#   BASE_IMAGE             base of every image (default: the Dockerfile's python:3.11-slim-bookworm)
#   CPU_TORCH_INDEX_URL    where the CPU images (ingest, filter, evaluate) get torch; e.g.
#                          https://download.pytorch.org/whl/cpu saves ~4 GB per CPU image (default: PyPI)
#   GPU_TORCH_INDEX_URL    where the GPU images (train, generate) get torch (default: PyPI, CUDA 13 wheels)
#   ENGINE                 docker | buildah | podman (default: docker if `docker info` works, else buildah, else podman)
#   KOLORA_BUILD_FLAGS     extra flags for the build command (e.g. a CA bundle, see docs/containers.md)
set -euo pipefail
# shellcheck source=images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KOLORA_ROOT"

action=build
case "${1:-}" in
  build | push | sizes) action=$1; shift ;;
  -h | --help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
esac
images=("$@")
if ((${#images[@]} == 0)); then
  mapfile -t images < <(all_images)
fi
for image in "${images[@]}"; do
  [[ -n "$(image_accelerator "$image")" ]] || die "no image $image in kolora_core/stages.py (images: $(all_images | tr '\n' ' '))"
done

version="$(kolora_version)"
tag="${TAG:-$version}"
[[ -n "$tag" ]] || die "could not read the version from pyproject.toml; set TAG"
registry="${REGISTRY:-localhost}"
registry="${registry%/}"

if [[ "$action" == sizes ]]; then
  runner="$(run_engine)"
  echo "| image | stages | accelerator | size |"
  echo "|---|---|---|---|"
  for image in "${images[@]}"; do
    ref="localhost/kolora-$image:$tag"
    bytes="$("$runner" image inspect --format '{{.Size}}' "$ref" 2>/dev/null)" || die "$ref is not built"
    stages="$("$runner" image inspect --format '{{index .Config.Labels "dev.kolora.stages"}}' "$ref")"
    printf '| kolora-%s | %s | %s | %s GB |\n' "$image" "$stages" "$(image_accelerator "$image")" \
      "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e9 }')"
  done
  exit 0
fi

if [[ "$action" == push && "$registry" == localhost ]]; then
  die "push needs a registry: make push REGISTRY=ghcr.io/you (images are pushed as <REGISTRY>/kolora-<image>:$tag)"
fi

builder="$(build_engine)"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$commit" != unknown && -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  commit="$commit-dirty"
fi
source_url="$(git remote get-url origin 2>/dev/null || true)"
# shellcheck disable=SC2206 # word splitting of the flags is intended
extra=(${KOLORA_BUILD_FLAGS:-})

case "$builder" in
  docker) build_cmd=(docker build) ;;
  # chroot isolation needs no nested namespaces (works inside CI containers); --layers keeps every step cached,
  # so the torch layer is downloaded once for all images
  buildah) build_cmd=(buildah bud --layers --force-rm --isolation "${BUILDAH_ISOLATION:-chroot}" --network host) ;;
  podman) build_cmd=(podman build --layers --force-rm --network host) ;;
  *) die "ENGINE=$builder: use docker, buildah or podman" ;;
esac

for image in "${images[@]}"; do
  accelerator="$(image_accelerator "$image")"
  # labels as build flags, not Dockerfile ARGs: a new commit invalidates no layer
  args=(--target image --build-arg "IMAGE=$image"
    --label "org.opencontainers.image.version=$version" --label "org.opencontainers.image.revision=$commit"
    --label "org.opencontainers.image.source=$source_url" --label "org.opencontainers.image.description=kolora $image image"
    --label "dev.kolora.stages=$(image_stages "$image")" --label "dev.kolora.accelerator=$accelerator")
  [[ -n "${BASE_IMAGE:-}" ]] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  if [[ "$accelerator" == gpu && -n "${GPU_TORCH_INDEX_URL:-}" ]]; then
    args+=(--build-arg "TORCH_INDEX_URL=$GPU_TORCH_INDEX_URL")
  elif [[ "$accelerator" != gpu && -n "${CPU_TORCH_INDEX_URL:-}" ]]; then
    args+=(--build-arg "TORCH_INDEX_URL=$CPU_TORCH_INDEX_URL")
  fi
  tags=(-t "localhost/kolora-$image:$tag")
  [[ "$registry" != localhost ]] && tags+=(-t "$registry/kolora-$image:$tag")
  echo "=== kolora-$image:$tag ($accelerator, $builder)"
  started=$SECONDS
  "${build_cmd[@]}" "${extra[@]}" "${args[@]}" "${tags[@]}" -f images/Dockerfile . \
    || die "building kolora-$image failed$([[ -z "${BASE_IMAGE:-}" ]] && echo " (no registry reachable? set BASE_IMAGE to a local Python 3.11 or Debian bookworm image)")"
  echo "=== kolora-$image:$tag built in $((SECONDS - started))s"
done

if [[ "$action" == push ]]; then
  pusher="$builder"
  for image in "${images[@]}"; do
    echo "=== push $registry/kolora-$image:$tag"
    "$pusher" push "$registry/kolora-$image:$tag"
  done
fi
