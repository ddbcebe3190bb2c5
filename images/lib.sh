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

# "IMAGE ACCELERATOR STAGE..." per image, from the stage table (kolora_core/stages.py: Stage.image, Stage.gpu)
image_table() {
  "${PYTHON3:-python3}" - "$KOLORA_ROOT" <<'EOF'
import sys

sys.path.insert(0, sys.argv[1])
from kolora_core.stages import STAGES

images = {}
for stage in STAGES.values():
    images.setdefault(stage.image, []).append(stage)
for image, stages in images.items():
    print(image, "gpu" if any(s.gpu for s in stages) else "cpu", *(s.name for s in stages))
EOF
}

# the image names
all_images() {
  image_table | cut -d' ' -f1
}

# cpu | gpu: whether one of the image's stages needs a GPU
image_accelerator() {
  image_table | awk -v image="$1" '$1 == image { print $2 }'
}

# the stages an image runs, space-separated
image_stages() {
  image_table | awk -v image="$1" '$1 == image { $1 = $2 = ""; sub(/^ +/, ""); print }'
}
