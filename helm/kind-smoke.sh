#!/usr/bin/env bash
# kind smoke test of the Helm chart: `make smoke-kind` (or helm/kind-smoke.sh from the repository root).
#
# On a machine with docker, kind, kubectl and helm (no GPU needed) it:
#   0. lints the chart with the values it installs (before anything is created),
#   1. creates the kind cluster $CLUSTER (an existing one is reused, and then kept),
#   2. installs Argo Workflows $ARGO_VERSION (server-side apply of the release's install.yaml, namespace argo),
#   3. builds the stage images (make images REGISTRY=$REGISTRY, tag = the project version) and loads them into kind
#      (`docker save` + `kind load image-archive`: `kind load docker-image` fails with Docker's containerd store),
#   4. installs helm/kolora into $NAMESPACE with helm/kolora/ci/kind-values.yaml (gpu disabled, smoke profile, the
#      chart's own artifact repository ConfigMap + S3 Secret, the in-cluster store as the artifact repository and the
#      release store of promote), then the SeaweedFS of helm/smoke/seaweedfs.yaml (credentials from that Secret, the
#      bucket made by its Job),
#   5. submits helm/smoke/workflow.yaml (kolora-pipeline, profile smoke: tiny models and tiny random scorers) and
#      waits for it,
#   6. asserts the evaluate report (grid.png, report.json, gate.txt) and the LoRA are in the store, and that the run
#      went through promote: the promote step Succeeded, latest.json names this model, and the version it points at
#      holds release.json and the LoRA,
#   7. deletes the cluster it created unless KEEP_CLUSTER=1.
# Exit codes: 0 passed, 1 failed (diagnostics printed), 2 a required tool is missing.
#
# Knobs (environment): CLUSTER, NAMESPACE, ARGO_VERSION, KIND_NODE_IMAGE, REGISTRY, TAG, IMAGES, SKIP_BUILD=1
# (images already built and tagged), KEEP_CLUSTER=1, TIMEOUT (seconds for the run), DIAG_DIR (diagnostics files).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/kolora"
CLUSTER="${CLUSTER:-kolora-smoke}"
NAMESPACE="${NAMESPACE:-kolora}"
RELEASE=kolora  # helm/smoke/seaweedfs.yaml reads the chart's Secret `<release>-s3` = kolora-s3
ARGO_VERSION="${ARGO_VERSION:-v4.1.2}"  # one of the CRD versions the chart is validated against (tests/argo_schema.py)
ARGO_INSTALL_URL="https://github.com/argoproj/argo-workflows/releases/download/${ARGO_VERSION}/install.yaml"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.33.1}"  # the Kubernetes version core objects are validated for
REGISTRY="${REGISTRY:-kolora.local}"  # = image.registry of ci/kind-values.yaml: nothing can be pulled from it
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)}"
IMAGES="${IMAGES:-ingest filter train generate evaluate}"  # the `image` of every stage in kolora_core/stages.py
TIMEOUT="${TIMEOUT:-1800}"
BUCKET=kolora  # = s3.bucket of ci/kind-values.yaml and BUCKET of the Job in helm/smoke/seaweedfs.yaml
S3_ENDPOINT=seaweedfs:8333  # the Service of helm/smoke/seaweedfs.yaml (host:port, as the chart's s3.endpoint wants)
MODEL=kolora  # the smoke profile's model name: releases under models/$MODEL/ (publish-prefix models)
DIAG_DIR="${DIAG_DIR:-}"
KUBECTL=(kubectl --context "kind-$CLUSTER")
HELM=(helm --kube-context "kind-$CLUSTER")

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind-smoke: %s\n' "$*" >&2; exit 1; }

require_tools() {
  local missing=()
  local tool
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    printf 'kind-smoke: missing tool(s): %s\n' "${missing[*]}" >&2
    printf 'Needs docker, kind (https://kind.sigs.k8s.io), kubectl and helm (v3.8+ or v4) on PATH; no GPU.\n' >&2
    exit 2
  fi
  docker info >/dev/null 2>&1 || { printf 'kind-smoke: docker is installed but its daemon is not reachable\n' >&2; exit 2; }
  [[ -n "$TAG" ]] || die "could not read the project version from pyproject.toml (set TAG)"
}

diagnostics() {
  log "diagnostics"
  "${KUBECTL[@]}" -n "$NAMESPACE" get workflows,pods,configmaps,secrets -o wide || true
  "${KUBECTL[@]}" -n "$NAMESPACE" get workflows -o yaml | sed -n '/^  status:/,$p' | head -n 200 || true
  local pod
  for pod in $("${KUBECTL[@]}" -n "$NAMESPACE" get pods -l workflows.argoproj.io/workflow -o name 2>/dev/null); do
    printf -- '--- %s\n' "$pod"
    "${KUBECTL[@]}" -n "$NAMESPACE" logs "$pod" --all-containers --tail=80 || true
  done
  "${KUBECTL[@]}" -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -n 40 || true
  "${KUBECTL[@]}" -n argo logs deployment/workflow-controller --tail=80 || true
  if [[ -n "$DIAG_DIR" ]]; then
    mkdir -p "$DIAG_DIR"
    kind export logs "$DIAG_DIR" --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}

cleanup() {
  local status=$?
  if ((status != 0)); then
    diagnostics
  fi
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "KEEP_CLUSTER=1: cluster kept (kubectl --context kind-$CLUSTER; kind delete cluster --name $CLUSTER)"
  elif [[ "${CREATED_CLUSTER:-0}" == "1" ]]; then
    log "deleting the cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "reusing the kind cluster $CLUSTER"
  else
    log "creating the kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
    CREATED_CLUSTER=1
    kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 180s
  fi
}

install_argo() {
  log "installing Argo Workflows $ARGO_VERSION"
  "${KUBECTL[@]}" create namespace argo --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
  "${KUBECTL[@]}" apply --server-side --force-conflicts -n argo -f "$ARGO_INSTALL_URL"
  "${KUBECTL[@]}" wait --for condition=established --timeout=120s \
    crd/workflows.argoproj.io crd/workflowtemplates.argoproj.io crd/cronworkflows.argoproj.io crd/workflowtaskresults.argoproj.io
  "${KUBECTL[@]}" -n argo rollout status deployment/workflow-controller --timeout=300s
}

load_images() {
  local image ref archives
  if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    log "building the images (make images REGISTRY=$REGISTRY)"
    make -C "$ROOT" images REGISTRY="$REGISTRY"
  fi
  archives="$(mktemp -d)"
  for image in $IMAGES; do
    ref="$REGISTRY/kolora-$image:$TAG"
    docker image inspect "$ref" >/dev/null 2>&1 || die "image $ref not found: build it (make images REGISTRY=$REGISTRY) or set TAG/IMAGES"
    log "kind load $ref"
    docker save "$ref" -o "$archives/$image.tar"
    kind load image-archive "$archives/$image.tar" --name "$CLUSTER"
    rm -f "$archives/$image.tar"
  done
  rmdir "$archives"
}

lint_chart() {
  log "helm lint $CHART (kind values)"
  helm lint "$CHART" --strict -f "$CHART/ci/kind-values.yaml" --set image.registry="$REGISTRY" --set image.tag="$TAG" \
    --set s3.endpoint="$S3_ENDPOINT"
}

install_chart() {
  log "helm install $CHART into $NAMESPACE"
  "${HELM[@]}" upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --create-namespace \
    -f "$CHART/ci/kind-values.yaml" --set image.registry="$REGISTRY" --set image.tag="$TAG" \
    --set s3.endpoint="$S3_ENDPOINT" --wait --timeout 5m
  "${KUBECTL[@]}" -n "$NAMESPACE" get workflowtemplate/kolora-pipeline configmap/artifact-repositories secret/kolora-s3 >/dev/null
}

install_store() {
  log "installing SeaweedFS (helm/smoke/seaweedfs.yaml)"
  "${KUBECTL[@]}" -n "$NAMESPACE" delete job seaweedfs-bucket --ignore-not-found  # a Job's pod template is immutable
  "${KUBECTL[@]}" -n "$NAMESPACE" apply -f "$ROOT/helm/smoke/seaweedfs.yaml"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status deployment/seaweedfs --timeout=300s
  "${KUBECTL[@]}" -n "$NAMESPACE" wait --for=condition=complete job/seaweedfs-bucket --timeout=300s
}

# `weed shell` commands (one per argument) inside the SeaweedFS pod: reads the filer directly, no S3 keys needed.
weed_shell() {
  # shellcheck disable=SC2016  # expanded by the shell in the pod, not here
  "${KUBECTL[@]}" -n "$NAMESPACE" exec deployment/seaweedfs -c seaweedfs -- sh -c \
    'printf "%s\n" "$@" | weed shell -master=localhost:9333' weed-shell "$@"
}

run_workflow() {
  local name phase deadline
  log "submitting helm/smoke/workflow.yaml"
  name="$("${KUBECTL[@]}" -n "$NAMESPACE" create -f "$ROOT/helm/smoke/workflow.yaml" -o jsonpath='{.metadata.name}')"
  log "waiting for $name (up to ${TIMEOUT}s)"
  deadline=$((SECONDS + TIMEOUT))
  while :; do
    phase="$("${KUBECTL[@]}" -n "$NAMESPACE" get workflow "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in
      Succeeded) break ;;
      Failed | Error)
        "${KUBECTL[@]}" -n "$NAMESPACE" get workflow "$name" -o jsonpath='{.status.message}{"\n"}' >&2 || true
        die "workflow $name ended $phase"
        ;;
    esac
    ((SECONDS < deadline)) || die "workflow $name still ${phase:-pending} after ${TIMEOUT}s"
    sleep 10
  done
  log "workflow $name succeeded"
  WORKFLOW="$name"
}

assert_outputs() {
  local listing object dir="/buckets/$BUCKET/$WORKFLOW"
  log "outputs in s3://$BUCKET/$WORKFLOW/"
  listing="$(weed_shell "fs.ls -l $dir/report" "fs.ls -l $dir/lora")"
  printf '%s\n' "$listing"
  for object in report/grid.png report/report.json report/gate.txt lora/; do
    grep -q -- "$dir/$object" <<<"$listing" || die "s3://$BUCKET/$WORKFLOW/$object is missing"
  done
  printf 'gate: %s\n' "$(weed_shell "fs.cat $dir/report/gate.txt")"
}

# The run went through promote: its node Succeeded, latest.json points at a version that holds the release.
assert_promoted() {
  local phase latest version listing object releases="/buckets/$BUCKET/models/$MODEL"
  phase="$("${KUBECTL[@]}" -n "$NAMESPACE" get workflow "$WORKFLOW" \
    -o jsonpath='{.status.nodes[?(@.displayName=="promote")].phase}')"
  [[ "$phase" == "Succeeded" ]] || die "the promote step of $WORKFLOW is '${phase:-absent}', not Succeeded (gate not passed?)"
  log "promoted release in s3://$BUCKET/models/$MODEL/"
  latest="$(weed_shell "fs.cat $releases/latest.json")"
  printf '%s\n' "$latest"
  grep -q "\"name\": \"$MODEL\"" <<<"$latest" || die "s3://$BUCKET/models/$MODEL/latest.json does not name $MODEL"
  version="$(sed -n 's/^ *"version": "\([^"]*\)".*/\1/p' <<<"$latest")"
  [[ -n "$version" ]] || die "s3://$BUCKET/models/$MODEL/latest.json names no version"
  listing="$(weed_shell "fs.ls -l $releases/$version")"
  printf '%s\n' "$listing"
  for object in release.json lora.safetensors; do
    grep -q -- "$releases/$version/$object" <<<"$listing" || die "s3://$BUCKET/models/$MODEL/$version/$object is missing"
  done
}

main() {
  cd "$ROOT"
  require_tools
  lint_chart
  trap cleanup EXIT
  create_cluster
  install_argo
  load_images
  install_chart
  install_store
  run_workflow
  assert_outputs
  assert_promoted
  log "kind smoke test passed ($WORKFLOW, promoted $MODEL)"
}

main "$@"
