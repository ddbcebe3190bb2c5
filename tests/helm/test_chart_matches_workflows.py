"""The chart renders the same Argo objects as workflows.render for equivalent options (one source of truth).

Each case is chart values + the RenderOptions (`render_all` kwargs) they stand for + the template parameter
defaults they set. Documented differences (docs/helm.md), removed before comparing: the chart adds
`metadata.namespace` and the Helm labels helm.sh/chart, app.kubernetes.io/instance and managed-by.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

import pytest
import yaml

from tests.helm.chart import CHART, ci_values, merge, render, script_defaults
from workflows.options import Toleration, project_version
from workflows.render import render_all

SA = "kolora-workflow"  # the ServiceAccount the chart creates for release `kolora`
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")
KIND = {"image": {"registry": script_defaults()["REGISTRY"], "tag": project_version()}}  # helm/kind-smoke.sh's --set

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str]]] = {
    "default": ({}, {"service_account": SA}, {}),
    "no-gpu": ({"gpu": {"enabled": False}}, {"gpu": False, "service_account": SA}, {}),
    "no-gpu-zero-gpus": ({"gpu": {"enabled": False}}, {"gpus": 0, "service_account": SA}, {}),  # `kolora render --gpus 0`
    "ci/no-gpu": (ci_values()["no-gpu"], {"gpu": False, "service_account": SA}, {"profile": "smoke"}),
    "ci/no-node-selector": (ci_values()["no-node-selector"], {"node_selector": (), "service_account": SA}, {}),
    "custom-gpu": (
        {
            "gpu": {
                "count": 2,
                "nodeSelector": {"nvidia.com/gpu.present": None, "cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoExecute"},
                ],
                "shmSize": "16Gi",
            },
            "artifactRepository": {"reference": True, "key": "default-v1"},
            "serviceAccount": {"create": False, "name": "kolora-runner"},
            "models": {"tokenSecret": {"name": "modelscope", "key": "token"}},
        },
        {
            "gpus": 2,
            "node_selector": (("cloud.google.com/gke-accelerator", "nvidia-h100-80gb"),),
            "tolerations": (Toleration("nvidia.com/gpu"), Toleration("pool", value="a100", effect="NoExecute", operator="Equal")),
            "shm_size": "16Gi",
            "artifact_repository_key": "default-v1",
            "service_account": "kolora-runner",
            "hub_secret": "modelscope",
            "hub_secret_key": "token",
        },
        {},
    ),
    "no-service-account": ({"serviceAccount": {"create": False}, "rbac": {"create": False}}, {"service_account": None}, {}),
    "other-configmap": (
        {"artifactRepository": {"reference": True, "configMap": "team-repos", "key": ""}},
        {"artifact_repository_configmap": "team-repos", "service_account": SA},
        {},
    ),
    "params": (
        {"profile": "smoke", "models": {"source": "tiny"}, "image": {"registry": "registry.example/ml", "tag": "9.9.9"}},
        {"service_account": SA},
        {"profile": "smoke", "model-source": "tiny", "image-registry": "registry.example/ml", "image-tag": "9.9.9"},
    ),
    "kind-smoke": (  # the chart's own repository and Secret, the in-cluster SeaweedFS as the release store too
        merge(ci_values()["kind"], KIND),
        {"gpu": False, "service_account": SA, "s3_secret": "kolora-s3"},
        {
            "profile": "smoke",
            "image-registry": KIND["image"]["registry"],
            "image-tag": KIND["image"]["tag"],
            "s3-endpoint": "http://seaweedfs:8333",
            "s3-bucket": "kolora",
        },
    ),
    "ci/quick-start": (ci_values()["quick-start"], {}, {}),  # = the dist defaults: Argo's quick-start MinIO
    "ci/aws-s3": (
        ci_values()["aws-s3"],
        {"s3_secret": "kolora-aws", "s3_secret_access_key": "AWS_ACCESS_KEY_ID", "s3_secret_secret_key": "AWS_SECRET_ACCESS_KEY"},
        {"s3-endpoint": "", "s3-bucket": "acme-kolora", "s3-region": "eu-central-1"},
    ),
    "ci/archive-logs": (ci_values()["archive-logs"], {"archive_logs": True, "generate_parallelism": None}, {}),
    "ci/notify": (ci_values()["notify"], {}, {"notify-url": "https://hooks.example.com/services/kolora"}),
}


def strip_chart_additions(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("namespace", None)
    for label in HELM_LABELS:
        obj["metadata"].get("labels", {}).pop(label, None)
    return obj


def expected(kwargs: dict[str, Any], params: dict[str, str]) -> dict[str, dict]:
    rendered = render_all(**{"gpu": True, **kwargs})
    template = yaml.safe_load(rendered["kolora-pipeline.yaml"])
    cron = yaml.safe_load(rendered["kolora-nightly.yaml"])
    for param in template["spec"]["arguments"]["parameters"]:
        param["value"] = params.get(param["name"], param["value"])
    if "profile" in params:  # cron.profile "" follows `profile`
        cron["spec"]["workflowSpec"]["arguments"]["parameters"][0] = {"name": "profile", "value": params["profile"]}
    return {"WorkflowTemplate": template, "CronWorkflow": cron}


def diff(a: dict, b: dict) -> str:
    text = [yaml.safe_dump(x, sort_keys=True, width=1 << 20).splitlines() for x in (a, b)]
    return "\n".join(difflib.unified_diff(*text, "workflows.render", "helm chart", lineterm="", n=2))


@pytest.mark.parametrize("case", sorted(CASES))
def test_chart_renders_what_workflows_render(case: str) -> None:
    values, kwargs, params = CASES[case]
    want = expected(kwargs, params)
    docs = render(values)
    got = {d["kind"]: d for objs in docs.values() for d in objs if d["apiVersion"].startswith("argoproj.io/")}
    cron_enabled = values.get("cron", {}).get("enabled", True)
    assert sorted(got) == sorted(k for k in want if cron_enabled or k != "CronWorkflow")
    for kind, obj in got.items():
        assert obj["metadata"]["namespace"] == "kolora"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        stripped = strip_chart_additions(obj)
        assert stripped == want[kind], f"{case}: {kind} differs from workflows.render:\n{diff(want[kind], stripped)}"


def test_defaults_are_the_workflows_defaults() -> None:
    """values.yaml's GPU block and cron block equal RenderOptions / workflows.nightly defaults."""
    from workflows import nightly
    from workflows.options import RenderOptions

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    options = RenderOptions()
    assert defaults["gpu"]["count"] == options.gpus and defaults["gpu"]["shmSize"] == options.shm_size
    assert defaults["gpu"]["nodeSelector"] == dict(options.node_selector)
    tolerations = [{k: v for k, v in vars(t).items() if v is not None} for t in options.tolerations]
    assert defaults["gpu"]["tolerations"] == tolerations
    assert defaults["models"]["tokenSecret"] == {"name": options.hub_secret, "key": options.hub_secret_key}
    assert defaults["cron"]["schedules"] == nightly.SCHEDULES and defaults["cron"]["timezone"] == nightly.TIMEZONE
    assert defaults["artifactRepository"]["configMap"] == options.artifact_repository_configmap
