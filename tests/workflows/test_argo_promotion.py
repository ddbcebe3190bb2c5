"""Promotion and train resume in the kolora-pipeline WorkflowTemplate: the gated publish, the promote step, checkpoints."""

from __future__ import annotations

from kolora_core.stages import STAGES
from tests.workflows.argo_objects import artifacts, tasks, templates
from tests.workflows.test_argo_pipeline import workflow_params
from workflows.options import RenderOptions


def test_publish_runs_only_when_the_gate_passed(template: dict) -> None:
    publish = tasks(template)["publish"]
    assert publish["when"] == "{{tasks.evaluate.outputs.parameters.gate}} == passed"
    assert publish["depends"] == "train && evaluate"  # evaluate must be among its dependencies: `when` reads its output
    sources = {a["name"]: a["from"] for a in publish["arguments"]["artifacts"]}
    assert sources == {"lora": "{{tasks.train.outputs.artifacts.lora}}", "report": "{{tasks.evaluate.outputs.artifacts.report}}"}
    assert all("when" not in t for name, t in tasks(template).items() if name != "publish")


def test_promote_follows_a_succeeded_publish_with_s3_keys_only_from_the_secret(template: dict) -> None:
    promote = tasks(template)["promote"]
    assert promote["depends"] == "publish.Succeeded" and "when" not in promote
    assert promote["arguments"]["artifacts"] == [{"name": "release", "from": "{{tasks.publish.outputs.artifacts.release}}"}]
    tmpl = templates(template)["promote"]
    container = tmpl["container"]
    assert container["image"] == "{{workflow.parameters.image-registry}}/kolora-evaluate:{{workflow.parameters.image-tag}}"
    assert [*container["command"], *container["args"]] == [
        "python", "-m", "kolora_core.cli", "publish", "--release", "/kolora/inputs/release",
        "--s3-endpoint", "{{workflow.parameters.s3-endpoint}}", "--bucket", "{{workflow.parameters.s3-bucket}}",
        "--prefix", "{{workflow.parameters.publish-prefix}}",
    ]  # fmt: skip
    assert artifacts(tmpl["inputs"]) == {"release": {"name": "release", "path": "/kolora/inputs/release"}}
    env = {e["name"]: e for e in container["env"]}
    options = RenderOptions()
    for name, key in (("AWS_ACCESS_KEY_ID", "accesskey"), ("AWS_SECRET_ACCESS_KEY", "secretkey")):
        assert env[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": options.s3_secret, "key": key, "optional": True}},
        }
    assert options.s3_secret == "kolora-s3"
    assert all("value" not in e for e in container["env"] if e["name"].startswith("AWS_"))
    assert container["securityContext"]["runAsNonRoot"] is True
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    params = workflow_params(template)
    assert params["s3-endpoint"]["value"] == "http://minio:9000"
    assert params["s3-bucket"]["value"] == "kolora" and params["publish-prefix"]["value"] == "models"


def test_the_secret_name_is_a_render_option() -> None:
    import yaml

    from workflows.render import render_all

    obj = yaml.safe_load(
        render_all(s3_secret="team-s3", s3_secret_access_key="id", s3_secret_secret_key="key")["kolora-pipeline.yaml"]
    )
    refs = [e["valueFrom"]["secretKeyRef"] for e in templates(obj)["promote"]["container"]["env"] if "valueFrom" in e]
    assert refs == [{"name": "team-s3", "key": "id", "optional": True}, {"name": "team-s3", "key": "key", "optional": True}]


def test_train_checkpoints_survive_retries(template: dict) -> None:
    train = templates(template)["train"]
    path = STAGES["train"].output_path("lora") + "/checkpoints"
    assert path == "/kolora/outputs/lora/checkpoints"  # kolora_core.training.checkpoint.checkpoint_dir's default
    key = {"key": "{{workflow.name}}/train-checkpoints"}
    assert artifacts(train["inputs"])["checkpoints"] == {"name": "checkpoints", "path": path, "s3": key, "optional": True}
    assert artifacts(train["outputs"])["checkpoints"] == {
        "name": "checkpoints",
        "path": path,
        "s3": key,
        "optional": True,
        "archive": {"none": {}},
    }
    assert train["retryStrategy"]["limit"] >= 1
    for name in STAGES:
        if name != "train":
            assert "checkpoints" not in artifacts(templates(template)[name].get("inputs"))
