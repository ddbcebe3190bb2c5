"""The promotion graph of kolora-pipeline: champion, check-changes and the unchanged skip, the gate, promote, resume.

The `when`/`depends` semantics are checked by running the rendered DAG through the local runner's emulation of
Argo's (govaluate with bare words as strings; `depends` where a bare name also accepts Skipped), task by task:
a task whose `depends` is false is Omitted, one whose `when` is false is Skipped.
"""

from __future__ import annotations

import re

import pytest

from kolora_core.runner.expressions import TaskOutcome, evaluate_when, parse_depends
from kolora_core.stages import CONFIG_PATH, STAGES
from tests.workflows.argo_objects import artifacts, tasks, templates
from tests.workflows.test_argo_pipeline import workflow_params
from workflows import pipeline
from workflows.options import RenderOptions
from workflows.steps import STEPS, STORE_SECRET_ANNOTATION

STORE = [
    "--s3-endpoint", "{{workflow.parameters.s3-endpoint}}", "--bucket", "{{workflow.parameters.s3-bucket}}",
    "--region", "{{workflow.parameters.s3-region}}", "--prefix", "{{workflow.parameters.publish-prefix}}",
]  # fmt: skip


def test_dag_dependencies(template: dict) -> None:
    deps = {name: task.get("depends") for name, task in tasks(template).items()}
    assert deps == {
        "ingest": None,
        "filter": "ingest",
        "champion": None,  # in parallel with ingest and fetch-models
        "check-changes": "filter && champion",
        "fetch-models": None,
        "train": "filter && check-changes && fetch-models",  # check-changes: its `when` reads `training`
        "generate": "fetch-models && train.Succeeded",  # a Skipped train Omits everything after it
        "evaluate": "filter && champion && fetch-models && train.Succeeded && generate",
        "publish": "train.Succeeded && generate && evaluate",  # evaluate: its `when` reads the gate
        "promote": "publish.Succeeded",
    }
    assert tasks(template)["train"]["when"] == (
        "{{tasks.check-changes.outputs.parameters.training}} == changed || {{workflow.parameters.on-unchanged}} == train"
    )
    assert tasks(template)["publish"]["when"] == "{{tasks.evaluate.outputs.parameters.gate}} == passed"
    assert {n for n, t in tasks(template).items() if "when" in t} == {"train", "publish"}


def simulate(template: dict, parameters: dict[str, str], outputs: dict[str, dict[str, str]]) -> dict[str, str]:
    """Task -> phase, every task that runs Succeeding with `outputs` (task -> its output parameters)."""
    values = {p["name"]: p["value"] for p in workflow_params(template).values()} | parameters
    phases: dict[str, str] = {}
    for name, task in tasks(template).items():  # rendered in dependency order
        depends = parse_depends(task.get("depends", ""), name) if task.get("depends") else None
        if depends and not depends.evaluate({n: TaskOutcome(phases[n]) for n in depends.tasks}):
            phases[name] = "Omitted"
            continue
        when = task.get("when", "")
        when = re.sub(r"\{\{workflow\.parameters\.([\w-]+)\}\}", lambda m: values[m[1]], when)
        when = re.sub(r"\{\{tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)\}\}", lambda m: outputs[m[1]][m[2]], when)
        phases[name] = "Succeeded" if evaluate_when(when, name) else "Skipped"
    return phases


AFTER_TRAIN = ("generate", "evaluate", "publish", "promote")


@pytest.mark.parametrize(
    ("training", "on_unchanged", "trains"),
    [("changed", "train", True), ("changed", "skip", True), ("unchanged", "train", True), ("unchanged", "skip", False)],
)
def test_only_an_unchanged_run_that_may_skip_skips_train(template: dict, training: str, on_unchanged: str, trains: bool) -> None:
    outputs = {"check-changes": {"training": training}, "evaluate": {"gate": "passed"}}
    phases = simulate(template, {"on-unchanged": on_unchanged}, outputs)
    assert phases["train"] == ("Succeeded" if trains else "Skipped")
    after = {phases[t] for t in AFTER_TRAIN}
    assert after == ({"Succeeded"} if trains else {"Omitted"}), phases
    assert "Failed" not in phases.values()  # an unchanged night Succeeds


def test_with_bare_train_dependencies_a_skipped_train_would_run_generate(template: dict) -> None:
    """Why `train.Succeeded`: Argo's bare `train` is true for a Skipped train too (the emulation agrees)."""
    assert parse_depends("fetch-models && train", "x").evaluate(
        {"fetch-models": TaskOutcome("Succeeded"), "train": TaskOutcome("Skipped")}
    )


@pytest.mark.parametrize(("gate", "published"), [("passed", True), ("failed", False), ("skipped", False)])
def test_publish_and_promote_only_when_the_gate_passed(template: dict, gate: str, published: bool) -> None:
    phases = simulate(template, {}, {"check-changes": {"training": "changed"}, "evaluate": {"gate": gate}})
    assert phases["publish"] == ("Succeeded" if published else "Skipped")
    assert phases["promote"] == ("Succeeded" if published else "Omitted")


def test_nightly_parameters_skip_an_unchanged_night(objects: dict, template: dict) -> None:
    nightly = {p["name"]: p["value"] for p in objects["kolora-nightly.yaml"]["spec"]["workflowSpec"]["arguments"]["parameters"]}
    phases = simulate(template, nightly, {"check-changes": {"training": "unchanged"}, "evaluate": {"gate": "passed"}})
    assert phases["train"] == "Skipped" and phases["promote"] == "Omitted"


def test_check_changes_and_evaluate_read_the_champion(template: dict) -> None:
    champion = templates(template)["champion"]
    assert artifacts(champion["outputs"])["champion"] == {
        "name": "champion",
        "path": "/kolora/outputs/champion",
        "archive": {"none": {}},
        "s3": {"key": "{{workflow.name}}/champion"},
    }
    for reader in ("check-changes", "evaluate"):
        args = artifacts(tasks(template)[reader]["arguments"])
        assert args["champion"]["from"] == "{{tasks.champion.outputs.artifacts.champion}}"
        assert artifacts(templates(template)[reader]["inputs"])["champion"]["path"] == STAGES[reader].input_path("champion")
    assert artifacts(tasks(template)["check-changes"]["arguments"])["trainset"]["from"] == (
        "{{tasks.filter.outputs.artifacts.trainset}}"
    )
    assert templates(template)["check-changes"]["container"]["image"].endswith(
        "/kolora-evaluate:{{workflow.parameters.image-tag}}"
    )


def test_champion_step_reads_the_release_store(template: dict) -> None:
    tmpl = templates(template)["champion"]
    container = tmpl["container"]
    assert [*container["command"], *container["args"]] == [
        "python", "-m", "kolora_core.cli", "champion", *STORE, "--name", "{{workflow.parameters.name}}",
        "--profile", "{{workflow.parameters.profile}}", "--config", CONFIG_PATH, "--out", "/kolora/outputs/champion",
    ]  # fmt: skip
    assert artifacts(tmpl["inputs"])["config"]["raw"] == {"data": "{{workflow.parameters.config}}"}
    assert tmpl["retryStrategy"]["retryPolicy"] == "Always"  # an idempotent read
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_promote_uploads_publishs_release_with_keys_only_from_the_secret(template: dict) -> None:
    promote = tasks(template)["promote"]
    assert promote["arguments"]["artifacts"] == [{"name": "release", "from": "{{tasks.publish.outputs.artifacts.release}}"}]
    tmpl = templates(template)["promote"]
    container = tmpl["container"]
    assert container["image"] == "{{workflow.parameters.image-registry}}/kolora-evaluate:{{workflow.parameters.image-tag}}"
    assert [*container["command"], *container["args"]] == [
        "python", "-m", "kolora_core.cli", "publish", "--release", "/kolora/inputs/release", *STORE,
    ]  # fmt: skip
    assert artifacts(tmpl["inputs"]) == {"release": {"name": "release", "path": "/kolora/inputs/release"}}
    options = RenderOptions()
    assert (options.s3_secret, options.s3_secret_access_key, options.s3_secret_secret_key) == (
        "my-minio-cred",
        "accesskey",
        "secretkey",
    )
    for step in ("promote", "champion"):
        env = {e["name"]: e for e in templates(template)[step]["container"]["env"]}
        for name, key in (("AWS_ACCESS_KEY_ID", "accesskey"), ("AWS_SECRET_ACCESS_KEY", "secretkey")):
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": "my-minio-cred", "key": key, "optional": True}},
            }
    assert template["metadata"]["annotations"][STORE_SECRET_ANNOTATION] == "my-minio-cred:accesskey:secretkey"
    for name, tmpl in templates(template).items():  # no other step holds the store's keys
        if name not in ("promote", "champion") and "container" in tmpl:
            assert not [e for e in tmpl["container"].get("env", []) if e["name"].startswith("AWS_")], name


def test_the_store_defaults_are_argos_quick_start(template: dict) -> None:
    params = workflow_params(template)
    assert params["s3-endpoint"]["value"] == "http://minio:9000" and params["s3-bucket"]["value"] == "my-bucket"
    assert params["s3-region"]["value"] == "" and params["publish-prefix"]["value"] == "models"


def test_the_secret_is_a_render_option() -> None:
    import yaml

    from workflows.render import render_all

    obj = yaml.safe_load(
        render_all(s3_secret="team-s3", s3_secret_access_key="id", s3_secret_secret_key="key")["kolora-pipeline.yaml"]
    )
    refs = [e["valueFrom"]["secretKeyRef"] for e in templates(obj)["promote"]["container"]["env"] if "valueFrom" in e]
    assert refs == [{"name": "team-s3", "key": "id", "optional": True}, {"name": "team-s3", "key": "key", "optional": True}]
    assert obj["metadata"]["annotations"][STORE_SECRET_ANNOTATION] == "team-s3:id:key"


def test_steps_are_listed_in_one_place(template: dict) -> None:
    """Every container template is a stage or a step of workflows.steps, and every step's command is the kolora CLI."""
    containers = {name for name, t in templates(template).items() if "container" in t}
    assert containers == set(STAGES) | set(STEPS)
    for step in STEPS.values():
        assert templates(template)[step.name]["container"]["command"][:3] == ["python", "-m", "kolora_core.cli"]
    assert template["spec"]["onExit"] == "notify" and "notify" not in tasks(template)


def test_resumable_outputs_survive_retries(template: dict) -> None:
    """train's checkpoints and generate's finished images: optional input AND output at the same path."""
    keys = {
        "train": "{{workflow.name}}/train-checkpoints",
        "generate": "{{workflow.name}}/generate-progress/shard-{{inputs.parameters.shard}}",
    }
    assert {n: s.resumable for n, s in STAGES.items() if s.resumable} == {"train": ("checkpoints",), "generate": ("progress",)}
    for name, key in keys.items():
        (art,) = STAGES[name].resumable
        tmpl = templates(template)[name]
        path = STAGES[name].output_path(art)
        assert path == f"/kolora/outputs/{art}"  # beside the stage's outputs, not inside lora/ or images/
        assert artifacts(tmpl["inputs"])[art] == {"name": art, "path": path, "s3": {"key": key}, "optional": True}
        assert artifacts(tmpl["outputs"])[art] == {
            "name": art,
            "path": path,
            "s3": {"key": key},
            "optional": True,
            "archive": {"none": {}},
        }
        assert tmpl["retryStrategy"]["limit"] >= 1
        assert art not in artifacts(tasks(template)[name].get("arguments"))  # never passed on to another task
    for name in set(STAGES) - set(keys):
        assert not {"checkpoints", "progress"} & set(artifacts(templates(template)[name].get("inputs")))


def test_summary_lists_the_unchanged_decision_sources(template: dict) -> None:
    """The outputs the runner's summary and the exit handler read exist where pipeline.py says."""
    assert pipeline.WHEN_READS == {"train": ("check-changes",), "publish": ("evaluate",)}
    for task, readers in pipeline.WHEN_READS.items():
        for reader in readers:
            param = re.search(rf"tasks\.{reader}\.outputs\.parameters\.([\w-]+)", pipeline.WHEN[task])[1]
            assert param in STAGES[reader].parameters
