"""The kolora-pipeline WorkflowTemplate: wiring from kolora_core.stages, GPU scheduling, reliability, security."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from kolora_core.config import TrainConfig, available_profiles
from kolora_core.errors import KoloraError
from kolora_core.runner.expressions import should_retry
from kolora_core.stage_cli import build_parser, config_from_args
from kolora_core.stages import CONFIG_ARTIFACT, CONFIG_PATH, STAGES
from tests.workflows.argo_objects import artifacts, tasks, templates
from workflows import pipeline
from workflows.options import SIZES, TERMINATION_GRACE_S, UPLOAD_GRACE_S, UPLOAD_KEY_PARAMS, project_version, run_parameters
from workflows.render import render_all
from workflows.steps import STEPS

GPU_STAGES = [name for name, stage in STAGES.items() if stage.gpu]
CPU_STAGES = [name for name, stage in STAGES.items() if not stage.gpu]


def workflow_params(obj: dict) -> dict[str, dict]:
    return {p["name"]: p for p in obj["spec"]["arguments"]["parameters"]}


# --- built from kolora_core.stages -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STAGES))
def test_container_template_is_the_stage_spec(template: dict, name: str) -> None:
    stage, tmpl = STAGES[name], templates(template)[name]
    container = tmpl["container"]
    assert container["command"] == stage.command
    registry, tag = "{{workflow.parameters.image-registry}}", "{{workflow.parameters.image-tag}}"
    assert container["image"] == f"{registry}/kolora-{stage.image}:{tag}"
    args = container["args"]
    assert args[:4] == ["--profile", "{{workflow.parameters.profile}}", "--config", CONFIG_PATH]
    io = stage.io_args()
    assert args[4 : 4 + len(io)] == io
    inputs = artifacts(tmpl.get("inputs"))
    extra = list(stage.resumable)  # kept across pod retries: test_argo_graph.py test_resumable_outputs_survive_retries
    assert list(inputs) == [CONFIG_ARTIFACT, *stage.inputs, *stage.uploads, *extra]
    assert inputs[CONFIG_ARTIFACT] == {"name": "config", "path": CONFIG_PATH, "raw": {"data": "{{workflow.parameters.config}}"}}
    for art in stage.inputs:
        assert inputs[art]["path"] == stage.input_path(art)
    for art in stage.uploads:  # the user's files at a parameter's key; '' leaves the key empty, which Argo skips
        key = "{{workflow.parameters." + UPLOAD_KEY_PARAMS[art] + "}}"
        assert inputs[art] == {"name": art, "optional": True, "path": stage.input_path(art), "s3": {"key": key}}
    outputs = artifacts(tmpl["outputs"])
    assert list(outputs) == [*stage.outputs, *extra]
    for art in stage.outputs:
        assert outputs[art]["path"] == stage.output_path(art)
        assert outputs[art]["path"].startswith(container["volumeMounts"][0]["mountPath"] + "/")  # on the kolora-work volume
    params = {p["name"]: p for p in tmpl["outputs"].get("parameters", [])}
    assert set(params) == set(stage.parameters)
    for param, (art, file) in stage.parameters.items():
        assert params[param]["valueFrom"]["path"] == f"{stage.output_path(art)}/{file}"


def _substituted_args(container: dict, values: dict[str, str], config: Path) -> list[str]:
    def sub(arg: str) -> str:
        arg = re.sub(r"\{\{workflow\.parameters\.([\w-]+)\}\}", lambda m: values[m.group(1)], arg)
        return arg.replace("{{inputs.parameters.shard}}", "0").replace(CONFIG_PATH, str(config))

    return [sub(a) for a in container["args"]]


def _config_lacks(flag: str) -> bool:
    from kolora_core.config import config_flags

    return flag not in config_flags()


@pytest.mark.skipif(
    _config_lacks("evaluate.champion_margin"),
    reason="evaluate.champion_margin (the champion-margin parameter) is not in this checkout's config yet (champion branch)",
)
@pytest.mark.parametrize("name", list(STAGES))
def test_every_step_resolves_the_same_config_through_its_real_cli(template: dict, name: str, tmp_path: Path) -> None:
    """The args parse with the stage's own argparse; '' keeps the profile, set parameters reach their field."""
    stage, container = STAGES[name], templates(template)[name]["container"]
    config = tmp_path / "run.yaml"
    config.write_text("train: {batch_size: 2}\n", encoding="utf-8")
    defaults = {p["name"]: p["value"] for p in workflow_params(template).values()}

    args = build_parser(stage).parse_args(_substituted_args(container, defaults, config))
    resolved = config_from_args(args)
    assert resolved.profile == "full" and resolved.train.steps == 500 and resolved.train.batch_size == 2

    chosen = {
        **defaults,
        "profile": "smoke",
        "dataset": "smoke://",
        "caption": "anime style",
        "steps": "7",
        "rank": "8",
        "alpha": "8",
        "learning-rate": "0.0002",
        "prompts": "[{prompt: a cat, seed: 3}]",
        "lora-strength": "0.5",
        "model-source": "tiny",
        "generate-shards": "2",
        "name": "anime-girl",
        "champion-margin": "0.25",
    }
    resolved = config_from_args(build_parser(stage).parse_args(_substituted_args(container, chosen, config)))
    assert resolved.profile == "smoke" and resolved.ingest.source == "smoke://" and resolved.ingest.caption == "anime style"
    assert (resolved.train.steps, resolved.train.lora_rank, resolved.train.lora_alpha) == (7, 8, 8.0)
    assert resolved.train.learning_rate == 0.0002 and resolved.generate.lora_strength == 0.5
    assert resolved.models.source == "tiny" and [p.prompt for p in resolved.generate.prompts] == ["a cat"]
    assert resolved.name == "anime-girl" and resolved.evaluate.champion_margin == 0.25
    if name == pipeline.FANOUT_STAGE:
        assert (resolved.generate.shards, resolved.generate.shard) == (2, 0)


def test_workflow_parameters(template: dict) -> None:
    params = workflow_params(template)
    assert list(params) == [p.name for p in run_parameters()]
    assert params["profile"]["value"] == "full" and params["profile"]["enum"] == available_profiles()
    assert params["config"]["value"] == "{}"
    assert params["image-registry"]["value"] == "ghcr.io/kolora"
    assert params["image-tag"]["value"] == project_version() != "latest"
    assert params["generate-shards"]["value"] == "1"
    blank = ("dataset", "dataset-key", "caption", "steps", "rank", "alpha", "learning-rate", "prompts", "lora-strength")
    for name in (*blank, "model-source"):
        assert params[name]["value"] == "", name
    for name in ("name", "champion-margin", "notify-url", "s3-region"):  # '' = the profile's / off / the default region
        assert params[name]["value"] == "", name
    assert params["on-unchanged"]["value"] == "train" and params["on-unchanged"]["enum"] == ["train", "skip"]
    # no credentials as parameters (they show in the UI and the workflow's spec); dataset-key is an object key
    assert not [n for n in params if re.search("token|secret|password|key", n) and n != "dataset-key"]


def test_every_workflow_parameter_is_used(rendered: dict[str, str]) -> None:
    text = rendered["kolora-pipeline.yaml"]
    for param in run_parameters():
        assert f"{{{{workflow.parameters.{param.name}}}}}" in text, param.name


# --- the graph (more in test_argo_graph.py) ---------------------------------------------------------------------


def test_artifacts_flow_from_their_producer(template: dict) -> None:
    for name, task in tasks(template).items():
        for art in task.get("arguments", {}).get("artifacts", []):
            producer = next(s for s in (*STAGES.values(), *STEPS.values()) if art["name"] in s.outputs)
            assert art["from"] == f"{{{{tasks.{producer.name}.outputs.artifacts.{art['name']}}}}}", name
            assert producer.name in task["depends"]


def test_generate_fans_out_over_prompt_shards(template: dict) -> None:
    task = tasks(template)["generate"]
    assert task["withSequence"] == {"count": "{{workflow.parameters.generate-shards}}"}
    assert task["arguments"]["parameters"] == [{"name": "shard", "value": "{{item}}"}]
    tmpl = templates(template)["generate"]
    assert tmpl["inputs"]["parameters"] == [{"name": "shard"}]
    args = tmpl["container"]["args"]
    assert args[args.index("--generate.shards") + 1] == "{{workflow.parameters.generate-shards}}"
    assert args[args.index("--generate.shard") + 1] == "{{inputs.parameters.shard}}"
    images = artifacts(tmpl["outputs"])["images"]
    assert images["s3"] == {"key": "{{workflow.name}}/images/shard-{{inputs.parameters.shard}}"}
    assert images["archive"] == {"none": {}}
    # evaluate and publish read every shard as one directory of shard-<n>/ subdirectories
    for reader in ("evaluate", "publish"):
        images = artifacts(templates(template)[reader]["inputs"])["images"]
        assert images["s3"] == {"key": "{{workflow.name}}/images"}
        assert images["path"] == STAGES[reader].input_path("images")
        assert "images" not in [a["name"] for a in tasks(template)[reader]["arguments"]["artifacts"]]


def test_output_parameters_have_defaults_and_are_workflow_outputs(template: dict) -> None:
    """A skipped or failed step still resolves them (Argo v4.0.7+/v3.7.16+); the exit handler reads them globally."""
    evaluate = {p["name"]: p for p in templates(template)["evaluate"]["outputs"]["parameters"]}
    artifact, file = STAGES["evaluate"].parameters["gate"]
    path = f"{STAGES['evaluate'].output_path(artifact)}/{file}"
    assert evaluate["gate"] == {"name": "gate", "globalName": "gate", "valueFrom": {"default": "skipped", "path": path}}
    assert (
        evaluate["mean-aesthetic"]["valueFrom"]["default"] == "" and evaluate["mean-aesthetic"]["globalName"] == "mean-aesthetic"
    )
    (training,) = templates(template)["check-changes"]["outputs"]["parameters"]
    assert training["valueFrom"] == {"default": "changed", "path": "/kolora/outputs/changes/training.txt"}  # unknown: train
    assert training["globalName"] == "training"
    assert pipeline.GATE_PASSED == "{{tasks.evaluate.outputs.parameters.gate}} == passed"


def test_outputs_are_key_only_in_the_default_repository_uncompressed(template: dict, rendered: dict[str, str]) -> None:
    assert "s3: {}" not in rendered["kolora-pipeline.yaml"]
    assert "artifactRepositoryRef" not in template["spec"]  # the namespace's default repository
    for tmpl in templates(template).values():
        for art in artifacts(tmpl.get("outputs")).values():
            assert art["archive"] == {"none": {}}
            assert set(art["s3"]) == {"key"} and art["s3"]["key"].startswith("{{workflow.name}}/")
            assert art.get("optional") is (True if art["name"] in ("checkpoints", "progress") else None), art
    with_key = yaml.safe_load(render_all(artifact_repository_key="default-v1")["kolora-pipeline.yaml"])
    assert with_key["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "default-v1"}


def test_summary_annotation_names_real_outputs(template: dict) -> None:
    listed = template["metadata"]["annotations"]["kolora.dev/summary-artifacts"]
    assert listed == "evaluate/report,filter/filter-report,train/lora"
    for item in listed.split(","):
        task, art = item.split("/")
        assert art in STAGES[task].outputs


def test_labels(template: dict) -> None:
    labels = template["spec"]["podMetadata"]["labels"]
    assert labels["kolora.dev/profile"] == "{{workflow.parameters.profile}}"
    assert labels["app.kubernetes.io/version"] == project_version()
    labels_from = template["spec"]["workflowMetadata"]["labelsFrom"]
    assert labels_from["kolora.dev/profile"] == {"expression": "workflow.parameters.profile"}
    for name in [*STAGES, *STEPS]:
        assert templates(template)[name]["metadata"]["labels"] == {"kolora.dev/stage": name}


# --- scheduling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GPU_STAGES)
def test_gpu_steps_request_a_gpu_and_tolerate_gpu_nodes(template: dict, name: str) -> None:
    tmpl = templates(template)[name]
    resources = tmpl["container"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["cpu"] == "8" and resources["requests"]["memory"] == "48Gi"
    assert resources["limits"]["memory"] == "64Gi"
    assert tmpl["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert tmpl["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert tmpl["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in tmpl["container"]["volumeMounts"]


@pytest.mark.parametrize("name", CPU_STAGES)
def test_cpu_steps_stay_off_gpus(template: dict, name: str) -> None:
    tmpl = templates(template)[name]
    assert "nvidia.com/gpu" not in tmpl["container"]["resources"]["limits"]
    assert "tolerations" not in tmpl and "nodeSelector" not in tmpl


def test_gpu_options(template: dict) -> None:
    from workflows.options import Toleration

    custom = render_all(gpus=2, tolerations=(Toleration("gpu-pool", value="h100", operator="Equal"),), node_selector=())
    train = templates(yaml.safe_load(custom["kolora-pipeline.yaml"]))["train"]
    assert train["container"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert train["tolerations"] == [{"effect": "NoSchedule", "key": "gpu-pool", "operator": "Equal", "value": "h100"}]
    assert "nodeSelector" not in train


def test_zero_gpus_is_the_gpu_less_variant(cpu_rendered: dict[str, str]) -> None:
    """A step without a GPU request must not tolerate or select GPU nodes; the chart's one GPU-less shape
    (gpu.enabled false, sized by cpuOnly; its schema refuses gpu.count 0) is what `--gpus 0` gives."""
    zero = render_all(gpus=0)
    for name in GPU_STAGES:
        tmpl = templates(yaml.safe_load(zero["kolora-pipeline.yaml"]))[name]
        assert "tolerations" not in tmpl and "nodeSelector" not in tmpl, name
        assert "nvidia.com/gpu" not in tmpl["container"]["resources"]["limits"], name
    assert zero == cpu_rendered
    with pytest.raises(ValueError, match="gpus -1"):
        render_all(gpus=-1)


def test_cpu_variant_has_no_gpu_anywhere(cpu_rendered: dict[str, str], cpu_template: dict) -> None:
    text = cpu_rendered["kolora-pipeline.yaml"]
    assert "nvidia.com/gpu" not in text and "tolerations" not in text and "nodeSelector" not in text
    assert cpu_template["metadata"]["name"] == "kolora-pipeline"  # same name: kolora-run and kolora-nightly work with it
    for name in [*STAGES, *STEPS]:
        requests = templates(cpu_template)[name]["container"]["resources"]["requests"]
        assert requests == {"cpu": "250m", "memory": "1Gi"}, name
    assert set(cpu_rendered) == set(render_all())
    assert "nvidia.com/gpu" not in "".join(cpu_rendered.values())


def test_every_stage_and_step_has_a_size() -> None:
    assert set(SIZES) == set(STAGES) | set(STEPS)


# --- reliability -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STAGES))
def test_retry_with_backoff_on_every_step(template: dict, name: str) -> None:
    retry = templates(template)[name]["retryStrategy"]
    assert retry["limit"] == 2 and retry["backoff"] == {"duration": "30s", "factor": 2}
    stage = STAGES[name]
    if stage.gpu or not stage.inputs:  # preemptible GPU nodes; downloads from the hub
        assert retry["retryPolicy"] == "Always"
        assert retry["expression"] == f"lastRetry.status == 'Error' || lastRetry.exitCode != '{KoloraError.exit_code}'"
    else:
        assert retry["retryPolicy"] == "OnError"


@pytest.mark.parametrize("name", ["champion", "promote"])
def test_store_steps_retry_a_store_blip_but_never_a_user_error(template: dict, name: str) -> None:
    """champion/promote exit 75 on a store blip and 2 on a damaged release or a version published with another
    LoRA: the rendered strategy, read by the local runner's copy of Argo's decision, retries only the first."""
    retry = templates(template)[name]["retryStrategy"]
    assert retry["retryPolicy"] == "Always" and retry["limit"] == 2
    decide = [should_retry(retry["retryPolicy"], retry.get("expression"), code, 1.0, name) for code in (75, 143, 1, 2)]
    assert decide == [True, True, True, False]


def test_notify_retries_only_errors_of_the_pod(template: dict) -> None:
    retry = templates(template)["notify"]["retryStrategy"]
    assert retry["retryPolicy"] == "OnError" and not should_retry(retry["retryPolicy"], retry.get("expression"), 1, 1.0, "notify")


def test_deadlines(template: dict) -> None:
    assert template["spec"]["activeDeadlineSeconds"] >= 24 * 3600
    for name in STAGES:
        deadline = templates(template)[name]["activeDeadlineSeconds"]
        assert 0 < deadline <= template["spec"]["activeDeadlineSeconds"], name
    assert templates(template)["train"]["activeDeadlineSeconds"] >= 6 * 3600


def test_steps_that_keep_state_at_sigterm_get_the_grace_to_upload_it(template: dict) -> None:
    """train checkpoints within train.sigterm_grace_s of SIGTERM, then Argo's wait container uploads the checkpoints
    (and generate's kept images) before Kubernetes' SIGKILL: the pod's grace covers both, stated in the pod spec."""
    grace = TrainConfig().sigterm_grace_s
    for name, stage in STAGES.items():
        patch = templates(template)[name].get("podSpecPatch")
        if not stage.resumable:
            assert patch is None, name
            continue
        seconds = json.loads(patch)["terminationGracePeriodSeconds"]
        assert seconds == TERMINATION_GRACE_S >= grace + UPLOAD_GRACE_S, name


def test_garbage_collection(template: dict) -> None:
    assert template["spec"]["podGC"] == {"strategy": "OnPodSuccess"}
    assert set(template["spec"]["ttlStrategy"]) == {"secondsAfterSuccess", "secondsAfterFailure"}


# --- security (pod hardening: test_argo_habits.py) ----------------------------------------------------------------


def test_security_context(template: dict) -> None:
    pod = template["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for name in [*STAGES, *STEPS]:
        ctx = templates(template)[name]["container"]["securityContext"]
        assert ctx == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }, name


def test_secrets_come_only_from_secret_refs(template: dict) -> None:
    fetch = templates(template)["fetch-models"]["container"]
    token = next(e for e in fetch["env"] if e["name"] == "MODELSCOPE_API_TOKEN")
    assert token == {
        "name": "MODELSCOPE_API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "kolora-hub", "key": "modelscope-token", "optional": True}},
    }
    for tmpl in templates(template).values():
        for env in tmpl.get("container", {}).get("env", []):
            if re.search("TOKEN|SECRET|PASSWORD|KEY", env["name"]):
                assert "value" not in env, env


# --- the local runner's Argo subset ----------------------------------------------------------------------------

TASK_KEYS = {"name", "template", "depends", "dependencies", "when", "arguments", "withItems", "withParam", "withSequence"}
INPUT_ARTIFACT_KEYS = {"name", "path", "from", "raw", "s3", "optional"}
OUTPUT_ARTIFACT_KEYS = {"name", "path", "archive", "s3", "optional"}
VARIABLE = re.compile(r"\{\{([^}]*)\}\}")
# Argo's own variables the rendered pipeline uses besides parameters and task outputs: the exit handler's and the
# metrics' (evaluated by the controller, or by the local runner for the exit handler).
ARGO_VARIABLES = {"workflow.name", "workflow.status", "workflow.duration", "item", "inputs.parameters.shard", "status"}


def test_data_flow_stays_inside_the_local_runner_subset(template: dict, rendered: dict[str, str]) -> None:
    names = set(tasks(template))
    params = set(workflow_params(template))
    for task in tasks(template).values():
        assert set(task) <= TASK_KEYS, task["name"]
    for name in [*STAGES, *STEPS]:
        tmpl = templates(template)[name]
        assert set(tmpl["container"]) <= {
            "image", "imagePullPolicy", "command", "args", "env", "volumeMounts", "resources", "securityContext",
        }  # fmt: skip
        for art in artifacts(tmpl.get("inputs")).values():
            assert set(art) <= INPUT_ARTIFACT_KEYS, (name, art)
        for art in artifacts(tmpl.get("outputs")).values():
            assert set(art) <= OUTPUT_ARTIFACT_KEYS, (name, art)
    for expr in set(VARIABLE.findall(rendered["kolora-pipeline.yaml"])):
        parts = expr.split(".")
        if parts[:2] == ["workflow", "parameters"]:
            assert parts[2] in params, expr
        elif parts[0] == "tasks":
            assert parts[1] in names and parts[2] == "outputs" and parts[3] in ("artifacts", "parameters"), expr
        elif parts[:3] == ["workflow", "outputs", "parameters"]:  # exported by a stage (globalName)
            assert any(parts[3] in s.parameters for s in STAGES.values()), expr
        elif parts[:2] == ["outputs", "parameters"]:  # evaluate's own metrics
            assert parts[2] in STAGES["evaluate"].parameters, expr
        else:
            assert expr in ARGO_VARIABLES, expr


def test_the_local_runner_loads_it(rendered: dict[str, str], cpu_rendered: dict[str, str]) -> None:
    runner = pytest.importorskip("kolora_core.runner.template", reason="the local runner is not in this checkout yet")
    for name, text in (
        ("kolora-pipeline.yaml", rendered["kolora-pipeline.yaml"]),
        ("--no-gpu", cpu_rendered["kolora-pipeline.yaml"]),
    ):
        workflow = runner.parse_workflow(yaml.safe_load(text), name)
        assert set(STAGES) <= set(workflow.templates)
