#!/usr/bin/env bash
# make smoke-containers: build every image, check each starts (`--help`, exit 0), run the smoke profile end to end
# through them with the local runner (`kolora run --engine podman|docker -p image-registry=localhost`), then check
# what a run must leave in runs/latest: the grid, the report, the LoRA, and outputs written by the images'
# non-root user (uid 10001).
#
# Slow the first time (the images download torch, several GB); then the builds are cached and the run takes
# a few minutes on a CPU. Environment: as images/build.sh (BASE_IMAGE, ENGINE, KOLORA_BUILD_FLAGS, ...), plus
#   PY          the Python with kolora installed (default .venv/bin/python)
#   RUNS_DIR    where the run goes (default runs)
#   SMOKE_BUILD=0  skip the build (the images are already built from this tree)
#   KOLORA_PODMAN_FLAGS / KOLORA_DOCKER_FLAGS  extra global flags of the engine (docs/containers.md)
set -euo pipefail
# shellcheck source=images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KOLORA_ROOT"

PY="${PY:-.venv/bin/python}"
RUNS_DIR="${RUNS_DIR:-runs}"
tag="${TAG:-$(kolora_version)}"
engine="$(run_engine)"
# shellcheck disable=SC2206 # the flags are words
if [[ "$engine" == podman ]]; then flags=(${KOLORA_PODMAN_FLAGS:-}); else flags=(${KOLORA_DOCKER_FLAGS:-}); fi
started=$SECONDS

echo "=== 1/4 build the images"
if [[ "${SMOKE_BUILD:-1}" != 0 ]]; then images/build.sh build; else echo "    skipped (SMOKE_BUILD=0)"; fi
built=$SECONDS

echo "=== 2/4 every image starts: <image> --help"
for image in $(all_images); do
  ref="localhost/kolora-$image:$tag"
  out="$("$engine" "${flags[@]}" run --rm --network none "$ref" --help 2>&1)" || { echo "$out" >&2; die "$ref --help failed"; }
  grep -q "^usage: python -m jobs\." <<<"$out" || { echo "$out" >&2; die "$ref --help printed no usage"; }
  user="$("$engine" "${flags[@]}" image inspect --format '{{.Config.User}}' "$ref")"
  [[ "$user" == 10001:10001 ]] || die "$ref runs as '$user', not 10001:10001"
  echo "    $ref: --help ok, user $user"
done

echo "=== 3/4 kolora run --engine $engine --profile smoke -p image-registry=localhost -p image-tag=$tag"
"$PY" -m kolora_core.cli run --engine "$engine" --profile smoke --runs-dir "$RUNS_DIR" --keep-work \
  -p image-registry=localhost -p "image-tag=$tag"
ran=$SECONDS

echo "=== 4/4 check $RUNS_DIR/latest"
run="$RUNS_DIR/latest"
for file in grid.png report.json report.html lora.safetensors summary.txt; do
  [[ -s "$run/$file" ]] || die "$run/$file is missing or empty"
done
grep -q "Succeeded" <(head -1 "$run/summary.txt") || die "the run did not succeed: $(head -1 "$run/summary.txt")"
grep -q "engine $engine" "$run/summary.txt" || die "the run did not use engine $engine"
# each step's outputs were written inside its container by the image's user, not by the runner
for outputs in "$run"/.work/*/outputs; do
  owners="$(find "$outputs" -mindepth 1 -printf '%U\n' | sort -u | tr '\n' ' ')"
  if [[ "$(id -u)" == 0 && "$owners" != "10001 " ]]; then
    die "$outputs: files owned by uids '$owners', expected 10001 (the images' non-root user)"
  fi
  echo "    $outputs: written by uid ${owners% }"
done
rm -rf "$run/.work"
echo "=== smoke-containers passed: build $((built - started))s, run $((ran - built))s, total $((SECONDS - started))s"
