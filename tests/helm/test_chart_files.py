"""The chart's data is hera's render, and its hand-written parts agree with kolora_core.

helm/kolora/files/ holds copies of workflows/dist/ (`make render` writes both; the chart templates load them with
`.Files.Get | fromYaml`), values.schema.json's enums are the stage table, the profiles and tzdata's zone names
(tests/helm/timezones.py), and Chart.yaml's appVersion is the project version (the default image tag).
"""

from __future__ import annotations

import json
import re
from typing import get_args

import yaml

from kolora_core.config import ModelsConfig, available_profiles
from kolora_core.stages import STAGES
from kolora_core.storage.bucket_names import GCS_HOST, GCS_RULE, S3_RULE
from tests.argo_schema import crd_schema, require_crds
from tests.helm.chart import CHART, render_text
from tests.helm.timezones import SCHEMA, rewrite, zone_names
from workflows.options import CONFIG_MAP_KEY, DNS_SUBDOMAIN, DNS_SUBDOMAIN_MAX, TOLERATION_EFFECTS, project_version
from workflows.render import DIST

FILES = CHART / "files"
TEMPLATE_FILE, NIGHTLY_FILE = "kolora-pipeline.yaml", "kolora-nightly.yaml"
CHART_DATA = {TEMPLATE_FILE: "templates/pipeline-workflowtemplate.yaml", NIGHTLY_FILE: "templates/nightly-cronworkflow.yaml"}


def _file(name: str) -> dict:
    return yaml.safe_load((FILES / name).read_text(encoding="utf-8"))


def _container_steps() -> list[str]:
    return [t["name"] for t in _file(TEMPLATE_FILE)["spec"]["templates"] if "container" in t]


def _schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def test_chart_files_are_the_committed_renders() -> None:
    """Byte-equal copies (no symlink: `helm package` and a Windows checkout keep them)."""
    assert sorted(p.name for p in FILES.iterdir()) == sorted(CHART_DATA)
    for name in CHART_DATA:
        assert not (FILES / name).is_symlink(), name
        assert (FILES / name).read_bytes() == (DIST / name).read_bytes(), (
            f"helm/kolora/files/{name} differs from workflows/dist/{name}: run `make render` and commit both"
        )


def _expressions(node: object) -> set[str]:
    """Every Argo {{...}} in the strings of a parsed object (toYaml may fold a long string across lines)."""
    if isinstance(node, dict):
        return {e for value in node.values() for e in _expressions(value)}
    if isinstance(node, list):
        return {e for value in node for e in _expressions(value)}
    return set(re.findall(r"\{\{[^{}]*\}\}", node)) if isinstance(node, str) else set()


def test_every_argo_expression_survives_helm() -> None:
    """Helm evaluates none of Argo's {{...}}: the rendered template holds exactly the expressions of the file."""
    argo = _expressions(_file(TEMPLATE_FILE))
    assert len(argo) > 10
    assert _expressions(yaml.safe_load(render_text()[CHART_DATA[TEMPLATE_FILE]])) == argo


def test_gpu_steps_of_the_file_are_the_gpu_stages() -> None:
    """The template finds GPU steps by their nvidia.com/gpu limit in the file: those are the stages that need one."""
    steps = _file(TEMPLATE_FILE)["spec"]["templates"]
    gpu = {t["name"] for t in steps if "nvidia.com/gpu" in t.get("container", {}).get("resources", {}).get("limits", {})}
    assert gpu == {name for name, stage in STAGES.items() if stage.gpu}


def test_values_size_every_container_step() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert list(values["stages"]) == _container_steps()
    assert set(values["cpuOnly"]) == {"resources", "activeDeadlineSeconds", "shmSize"}


def test_schema_enums_are_kolora_cores() -> None:
    schema = _schema()
    props = schema["properties"]
    assert props["stages"]["required"] == list(props["stages"]["properties"]) == _container_steps()
    assert set(STAGES) < set(_container_steps()), "every stage is a step (promote is the workflow's own)"
    assert schema["definitions"]["profile"]["enum"] == available_profiles()
    assert props["models"]["properties"]["source"]["enum"] == ["", *get_args(ModelsConfig.model_fields["source"].annotation)]
    s3 = props["s3"]
    assert s3["if"]["properties"]["endpoint"]["pattern"] == f"^{re.escape(GCS_HOST)}(:[0-9]+)?$", "kolora's GCS host"
    for rule, branch in ((GCS_RULE, s3["then"]), (S3_RULE, s3["else"])):  # the rules kolora run applies
        bucket = branch["properties"]["bucket"]
        assert (bucket["pattern"], bucket["maxLength"]) == (f"^({rule.pattern.pattern})?$", rule.max_length), rule.store
    account = props["serviceAccount"]["properties"]["name"]
    assert (account["pattern"], account["maxLength"]) == (f"^({DNS_SUBDOMAIN.pattern})?$", DNS_SUBDOMAIN_MAX), "kolora render's"
    effect = props["gpu"]["properties"]["tolerations"]["items"]["properties"]["effect"]
    assert effect["enum"] == ["", *TOLERATION_EFFECTS], "kolora render's (and Kubernetes' '': every effect)"


def test_schema_names_and_keys_are_kolora_renders() -> None:
    """Every Secret/ConfigMap name and data key of the values is checked by the rule `kolora render` applies to its flag."""
    definitions, props = _schema()["definitions"], _schema()["properties"]
    assert (definitions["objectName"]["pattern"], definitions["objectName"]["maxLength"]) == (
        f"^({DNS_SUBDOMAIN.pattern})$",
        DNS_SUBDOMAIN_MAX,
    )
    assert (definitions["dataKey"]["pattern"], definitions["dataKey"]["maxLength"]) == (
        f"^({CONFIG_MAP_KEY.pattern})$",
        DNS_SUBDOMAIN_MAX,
    )
    optional = {"anyOf": [{"const": ""}, {"$ref": "#/definitions/objectName"}]}
    assert definitions["optionalObjectName"] == optional
    names = [
        props["artifactRepository"]["properties"]["configMap"],
        props["models"]["properties"]["tokenSecret"]["properties"]["name"],
    ]
    assert names == [{"$ref": "#/definitions/objectName"}] * 2
    optional_names = [props["fullnameOverride"], props["nameOverride"], props["s3"]["properties"]["existingSecret"]]
    assert optional_names == [{"$ref": "#/definitions/optionalObjectName"}] * 3
    keys = [
        props["models"]["properties"]["tokenSecret"]["properties"]["key"],
        *props["s3"]["properties"]["secretKeys"]["properties"].values(),
    ]
    assert keys == [{"$ref": "#/definitions/dataKey"}] * 3
    assert props["artifactRepository"]["properties"]["key"] == {"anyOf": [{"const": ""}, {"$ref": "#/definitions/dataKey"}]}


def test_schema_cron_schedules_are_argo_v4s() -> None:
    """Argo v4's CRD refuses a bad schedule at install; v3.7's takes any string (the controller then never runs it)."""
    require_crds()
    argo = crd_schema("v4.1.2", "CronWorkflow")["properties"]["spec"]["properties"]["schedules"]["items"]
    assert _schema()["properties"]["cron"]["properties"]["schedules"]["items"] == argo


def test_schema_timezones_are_the_tzdata_names() -> None:
    """cron.timezone takes the zones Go's time.LoadLocation loads: the enum is the generator's output, byte for byte."""
    timezone = _schema()["definitions"]["timezone"]
    assert _schema()["properties"]["cron"]["properties"]["timezone"] == {"$ref": "#/definitions/timezone"}
    assert timezone["if"]["enum"][:2] == ["", "Local"] and {"UTC", "Europe/Berlin", "Etc/GMT-14"} < set(timezone["if"]["enum"])
    text = SCHEMA.read_text(encoding="utf-8")
    assert rewrite(text, zone_names()) == text, "values.schema.json's time zones are not tzdata's: python -m tests.helm.timezones"


def test_schema_quantities_are_kubernetes_quantities() -> None:
    """A resource or /dev/shm size the schema takes is one Argo's CRD takes (and not negative)."""
    require_crds()
    step = crd_schema("v4.1.2", "WorkflowTemplate")["properties"]["spec"]["properties"]["templates"]["items"]["properties"]
    argo = step["container"]["properties"]["resources"]["properties"]["limits"]["additionalProperties"]["pattern"]
    string, integer = _schema()["definitions"]["quantity"]["anyOf"]
    assert string["pattern"] == argo.replace("^(\\+|-)?", "^", 1) != argo
    assert integer == {"type": "integer", "minimum": 0}


def test_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == project_version() == _file(TEMPLATE_FILE)["metadata"]["labels"]["app.kubernetes.io/version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "kolora"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"]), "chart version: SemVer, bumped on every chart change"
