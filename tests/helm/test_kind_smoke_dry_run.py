"""helm/kind-smoke.sh run end to end against stub docker/kind/kubectl/helm/make that log their arguments.

Nothing is created: this checks the script's control flow and the commands it would run (order, pinned versions,
the values it installs with, the assertions on the store's listing, teardown and KEEP_CLUSTER, the failure path with
diagnostics), which shellcheck cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helm.chart import SMOKE_SCRIPT, script_defaults
from workflows.options import project_version

STUB = r"""#!/usr/bin/env bash
tool="$(basename "$0")"
printf '%s %s\n' "$tool" "$*" >> "$STUB_LOG"
args=" $* "
case "$tool" in
  kind)
    [[ "$args" == *" get clusters "* ]] && { [[ -n "${STUB_EXISTING:-}" ]] && echo kolora-smoke; exit 0; }
    exit 0 ;;
  kubectl)
    [[ "$args" == *" --dry-run=client "* ]] && { printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: argo\n'; exit 0; }
    [[ "$args" == *" apply "* ]] && { cat >/dev/null; exit 0; }
    [[ "$args" == *" create -f "* ]] && { echo kolora-smoke-x7k2p; exit 0; }
    [[ "$args" == *"{.status.phase}"* ]] && { echo "${STUB_PHASE:-Succeeded}"; exit 0; }
    [[ "$args" == *'displayName=="promote"'* ]] && { echo "${STUB_PROMOTE-Succeeded}"; exit 0; }
    [[ "$args" == *"{.status.message}"* ]] && { echo "child 'train' failed"; exit 0; }
    if [[ "$args" == *" exec "* ]]; then
      [[ "$args" == *" fs.ls -l /buckets/kolora/models/"* ]] && { printf '%s\n' "${STUB_RELEASE:-}"; exit 0; }
      [[ "$args" == *" fs.ls "* ]] && { printf '%s\n' "${STUB_LISTING:-}"; exit 0; }
      [[ "$args" == *"latest.json"* ]] && { printf '%s\n' "${STUB_LATEST:-}"; exit 0; }
      [[ "$args" == *" fs.cat "* ]] && { echo passed; exit 0; }
      exit 0
    fi
    exit 0 ;;
  *) exit 0 ;;
esac
"""
ARGO_RELEASES = "https://github.com/argoproj/argo-workflows/releases/download"
LISTING = "\n".join(
    f"-rw-rw----   1 root root   1024 /buckets/kolora/kolora-smoke-x7k2p/{path}"  # `weed shell` fs.ls -l
    for path in ("report/grid.png", "report/report.json", "report/gate.txt", "lora/lora.safetensors")
)
VERSION = "v0-3f2a9c1e"
LATEST = (
    f'{{\n  "lora_sha256": "ab12",\n  "name": "kolora",\n  "prefix": "models/kolora/{VERSION}/",\n  "version": "{VERSION}"\n}}'
)
RELEASE = "\n".join(
    f"-rw-rw----   1 root root   1024 /buckets/kolora/models/kolora/{VERSION}/{path}"
    for path in ("grid.png", "lora.safetensors", "release.json", "report.json")
)


def run_script(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm", "make"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    environ = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_LISTING": LISTING,
        "STUB_LATEST": LATEST,
        "STUB_RELEASE": RELEASE,
        **env,
    }
    result = subprocess.run(["bash", str(SMOKE_SCRIPT)], capture_output=True, text=True, env=environ, timeout=60)
    return result, log.read_text().splitlines()


def index(calls: list[str], fragment: str) -> int:
    hits = [i for i, call in enumerate(calls) if fragment in call]
    assert hits, f"no call contains {fragment!r}:\n" + "\n".join(calls)
    return hits[0]


@pytest.fixture(autouse=True)
def _bash() -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")


def test_success_runs_every_step_in_order_and_tears_down(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    pins, version = script_defaults(), project_version()
    steps = [
        f"helm lint {SMOKE_SCRIPT.parent}/kolora --strict -f {SMOKE_SCRIPT.parent}/kolora/ci/kind-values.yaml",
        f"kind create cluster --name kolora-smoke --image {pins['KIND_NODE_IMAGE']}",
        f"apply --server-side --force-conflicts -n argo -f {ARGO_RELEASES}/{pins['ARGO_VERSION']}/install.yaml",
        "rollout status deployment/workflow-controller",
        f"make -C {SMOKE_SCRIPT.parent.parent} images REGISTRY=kolora.local",
        f"docker save kolora.local/kolora-evaluate:{version} -o",
        "/evaluate.tar --name kolora-smoke",
        "helm --kube-context kind-kolora-smoke upgrade --install kolora",
        "-n kolora delete job seaweedfs-bucket --ignore-not-found",
        "-n kolora apply -f",
        "rollout status deployment/seaweedfs",
        "wait --for=condition=complete job/seaweedfs-bucket",
        "create -f",
        "get workflow kolora-smoke-x7k2p -o jsonpath={.status.phase}",
        "fs.ls -l /buckets/kolora/kolora-smoke-x7k2p/report fs.ls -l /buckets/kolora/kolora-smoke-x7k2p/lora",
        "fs.cat /buckets/kolora/kolora-smoke-x7k2p/report/gate.txt",
        'get workflow kolora-smoke-x7k2p -o jsonpath={.status.nodes[?(@.displayName=="promote")].phase}',
        "fs.cat /buckets/kolora/models/kolora/latest.json",
        f"fs.ls -l /buckets/kolora/models/kolora/{VERSION}",
        "kind delete cluster --name kolora-smoke",
    ]
    positions = [index(calls, step) for step in steps]
    assert positions == sorted(positions), "\n".join(calls)
    install = calls[index(calls, "upgrade --install")]
    assert f"--set image.registry=kolora.local --set image.tag={version} --set s3.endpoint=seaweedfs:8333" in install
    assert "--namespace kolora" in install
    saves = [c.split() for c in calls if c.startswith("docker save")]
    loads = [c.split() for c in calls if c.startswith("kind load")]
    assert [c[2] for c in saves] == [f"kolora.local/kolora-{i}:{version}" for i in pins["IMAGES"].split()]
    assert [c[:3] for c in loads] == [["kind", "load", "image-archive"]] * len(saves)  # not docker-image (kind #3795)
    assert [c[3] for c in loads] == [c[4] for c in saves]
    assert "kind smoke test passed (kolora-smoke-x7k2p, promoted kolora)" in result.stderr and "gate: passed" in result.stdout


def test_keep_cluster_and_skip_build(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, KEEP_CLUSTER="1", SKIP_BUILD="1")
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("kind delete", "make ")) for c in calls)
    assert "KEEP_CLUSTER=1: cluster kept" in result.stderr


def test_an_existing_cluster_is_reused_and_kept(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, STUB_EXISTING="1")
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("kind create", "kind delete")) for c in calls)


def test_failed_workflow_prints_diagnostics_and_tears_down(tmp_path: Path) -> None:
    result, calls = run_script(tmp_path, STUB_PHASE="Failed", DIAG_DIR=str(tmp_path / "diag"))
    assert result.returncode == 1
    assert "workflow kolora-smoke-x7k2p ended Failed" in result.stderr and "child 'train' failed" in result.stderr
    assert index(calls, "logs deployment/workflow-controller") < index(calls, "kind delete cluster")
    assert index(calls, "kind export logs") >= 0
    assert not any("fs.ls" in c for c in calls)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STUB_PROMOTE": "Omitted"}, "the promote step of kolora-smoke-x7k2p is 'Omitted', not Succeeded"),
        ({"STUB_PROMOTE": ""}, "the promote step of kolora-smoke-x7k2p is 'absent'"),
        ({"STUB_LATEST": ""}, "latest.json does not name kolora"),
        ({"STUB_LATEST": LATEST.replace('"version"', '"v"')}, "latest.json names no version"),
        ({"STUB_RELEASE": RELEASE.replace("release.json", "other.json")}, f"models/kolora/{VERSION}/release.json is missing"),
        ({"STUB_RELEASE": RELEASE.replace("lora.safetensors", "x")}, f"models/kolora/{VERSION}/lora.safetensors is missing"),
    ],
)
def test_a_run_that_did_not_promote_fails(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result, calls = run_script(tmp_path, **env)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert index(calls, "kind delete cluster") >= 0


def test_missing_outputs_fail(tmp_path: Path) -> None:
    result, _ = run_script(tmp_path, STUB_LISTING=LISTING.splitlines()[-1])
    assert result.returncode == 1
    assert "s3://kolora/kolora-smoke-x7k2p/report/grid.png is missing" in result.stderr
