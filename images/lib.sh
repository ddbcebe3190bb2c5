# shellcheck shell=bash
# Shared by images/build.sh and images/smoke.sh (sourced, not run): the container engine and the image names.
#
# Engine: $ENGINE if set (docker, buildah or podman); else docker when a Docker engine answers `docker info`
# (a docker CLI without a daemon does not count), else buildah (builds) / podman (runs), else podman for both.

KOLORA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "images: $*" >&2
  exit 1
}

kolora_version() {
  sed -n 's/^version *= *"\(.*\)"/\1/p' "$KOLORA_ROOT/pyproject.toml" | head -1
}

# docker | podman: what runs containers (and pushes, inspects)
run_engine() {
  if [[ -n "${ENGINE:-}" ]]; then
    case "$ENGINE" in
      docker | podman) echo "$ENGINE" ;;
      buildah) echo podman ;;
      *) die "ENGINE=$ENGINE: use docker, buildah or podman" ;;
    esac
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    die "no container engine: need a running Docker engine (docker info) or podman (see docs/containers.md)"
  fi
}

# docker | buildah | podman: what builds the images
build_engine() {
  if [[ -n "${ENGINE:-}" ]]; then
    echo "$ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v buildah >/dev/null 2>&1; then
    echo buildah
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    die "no image builder: need a running Docker engine (docker info), buildah or podman (see docs/containers.md)"
  fi
}

# the image names: one per images/<image>/Dockerfile (= the `image` values of kolora_core/stages.py)
all_images() {
  local d
  for d in "$KOLORA_ROOT"/images/*/Dockerfile; do
    basename "$(dirname "$d")"
  done
}

# cpu | gpu, from the Dockerfile's dev.kolora.accelerator label
image_accelerator() {
  sed -n 's/.*dev\.kolora\.accelerator="\([a-z]*\)".*/\1/p' "$KOLORA_ROOT/images/$1/Dockerfile" | head -1
}
