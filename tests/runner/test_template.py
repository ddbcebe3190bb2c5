"""Template parsing: what is supported, what is ignored as scheduling-only, what is refused and how."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kolora_core.errors import KoloraError
from kolora_core.runner.template import load_workflow, parse_workflow

from .conftest import TEMPLATES

REPO = Path(__file__).resolve().parents[2]


def base() -> dict[str, Any]:
    return yaml.safe_load((TEMPLATES / "failing.yaml").read_text())


def test_fixture_templates_parse() -> None:
    for path in sorted(TEMPLATES.glob("*.yaml")):
        workflow = load_workflow(path)
        assert workflow.entrypoint in workflow.templates


def test_typed_view_of_a_template() -> None:
    workflow = load_workflow(TEMPLATES / "pipeline.yaml")
    assert workflow.name == "mini"
    assert [p.name for p in workflow.parameters] == ["greeting", "threshold", "profile"]
    assert workflow.parameters[2].enum == ("smoke", "full")
    tasks = {t.name: t for t in workflow.template("main").tasks}
    assert tasks["report"].dependencies == ("transform",)
    assert tasks["announce"].depends.text == "publish.Succeeded"
    transform = workflow.template("transform")
    assert transform.output_artifacts[0].archive is False
    assert workflow.template("produce").output_artifacts[0].archive is True
    assert workflow.annotations["kolora.dev/summary-artifacts"] == "report/report"


def mutate(edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base())
    edit(doc)
    return doc


def templates(doc: dict[str, Any]) -> dict[str, Any]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: templates(d)["ok"].update(steps=[[]]), "field 'steps' is not supported"),
        (lambda d: templates(d)["main"]["dag"]["tasks"][1].update(continueOn={"failed": True}), "'continueOn' is not supported"),
        (lambda d: d["spec"].update(onExit="cleanup"), "spec.onExit 'cleanup' names no template"),
        (lambda d: d["spec"].update(hooks={"exit": {"template": "ok"}}), "'hooks' is not supported"),
        (
            lambda d: templates(d)["ok"]["container"].update(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {}}}]),
            "env 'X': valueFrom: field 'configMapKeyRef' is not supported",
        ),
        (
            lambda d: templates(d)["ok"]["container"].update(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}]),
            "secretKeyRef needs a name and a key",
        ),
        (lambda d: templates(d)["main"]["dag"]["tasks"][0].update(dependencies=["after"]), "dependency cycle"),
        (lambda d: templates(d)["main"]["dag"]["tasks"][1].update(dependencies=["nope"]), "depends on 'nope'"),
        (lambda d: templates(d)["main"]["dag"]["tasks"][1].update(template="missing"), "'missing', which does not exist"),
        (lambda d: d["spec"].update(entrypoint="nothing"), "names no template"),
        (
            lambda d: templates(d)["ok"].update(
                outputs={"artifacts": [{"name": "x", "path": "/kolora/x", "s3": {"bucket": "b", "key": "k"}}]}
            ),
            "only a key",
        ),
        (
            lambda d: templates(d)["ok"].update(outputs={"artifacts": [{"name": "x", "path": "/kolora/x", "s3": {}}]}),
            "s3 without a key",
        ),
        (
            lambda d: templates(d)["ok"].update(outputs={"parameters": [{"name": "p", "valueFrom": {"jsonPath": "{.x}"}}]}),
            "'jsonPath'",
        ),
        (
            lambda d: templates(d)["ok"].update(retryStrategy={"limit": 1, "expression": "asInt(lastRetry.exitCode) > 2"}),
            "retryStrategy",
        ),
        (lambda d: d.update(kind="CronWorkflow"), "kind 'CronWorkflow'"),
        (lambda d: d["spec"]["templates"][0].pop("name"), r"^t\.yaml: a template has no name$"),
        (lambda d: d["spec"]["templates"].append("ok"), r"t\.yaml: spec\.templates\[\]: expected a mapping, got str"),
        (lambda d: templates(d)["main"]["dag"]["tasks"][0].pop("name"), r"template 'main': a DAG task has no name$"),
        (
            lambda d: templates(d)["ok"].update(inputs={"parameters": [{"value": "1"}]}),
            r"template 'ok': inputs\.parameters: a parameter has no name$",
        ),
        (
            lambda d: templates(d)["ok"].update(outputs={"artifacts": [{"path": "/kolora/x"}]}),
            r"template 'ok': outputs\.artifacts: an artifact has no name$",
        ),
    ],
)
def test_refusals_name_the_place_and_the_field(edit: Any, message: str) -> None:
    with pytest.raises(KoloraError, match=message):
        parse_workflow(mutate(edit), "t.yaml")


def test_a_template_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    """A --template that is not UTF-8 was a UnicodeDecodeError traceback; a directory was "not found"."""
    binary = tmp_path / "pipeline.yaml"
    binary.write_bytes(b"\xff\xfekind: WorkflowTemplate\n")
    with pytest.raises(KoloraError, match=r"^workflow template .*pipeline\.yaml is not UTF-8 \(byte 0xff on line 1\)"):
        load_workflow(binary)
    with pytest.raises(KoloraError, match=r"^workflow template .* is a directory: pass --template a rendered workflow YAML"):
        load_workflow(tmp_path)


def test_scheduling_only_fields_are_ignored() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["spec"].update(serviceAccountName="sa", podGC={"strategy": "OnPodSuccess"}, volumes=[], activeDeadlineSeconds=60)
        ok = templates(doc)["ok"]
        ok.update(
            tolerations=[], nodeSelector={"a": "b"}, podSpecPatch="{}", metadata={"labels": {"x": "y"}}, activeDeadlineSeconds=5
        )
        ok["container"].update(
            resources={"limits": {"nvidia.com/gpu": "1"}}, volumeMounts=[], securityContext={}, workingDir="/w"
        )
        ok.update(retryStrategy={"limit": "2", "retryPolicy": "Always", "backoff": {"duration": "30s"}})

    workflow = parse_workflow(mutate(edit), "t.yaml")
    assert workflow.template("ok").retry_limit == 2


def test_nested_dag_is_refused_clearly() -> None:
    """No rendered workflow nests DAGs (generate's shards are bounded by the DAG's parallelism), so the runner has none."""

    def edit(doc: dict[str, Any]) -> None:
        doc["spec"]["templates"].append({"name": "inner", "dag": {"tasks": [{"name": "x", "template": "ok"}]}})
        templates(doc)["main"]["dag"]["tasks"].append({"name": "nested", "template": "inner"})

    with pytest.raises(KoloraError, match="nested"):
        parse_workflow(mutate(edit), "t.yaml")


def test_hera_rendered_template_parses() -> None:
    """What hera 7.1 renders (depends strings, archive none, key-only S3, secret env, retry) must be accepted."""
    from hera.workflows import (
        DAG,
        Artifact,
        Container,
        NoneArchiveStrategy,
        Parameter,
        RetryStrategy,
        S3Artifact,
        WorkflowTemplate,
    )
    from hera.workflows.models import EnvVar, EnvVarSource, SecretKeySelector, Toleration

    step = Container(
        name="step",
        image="kolora/x:1",
        command=["python", "-m", "jobs.x"],
        args=["--out", "/kolora/outputs/out", "--p", "{{inputs.parameters.p}}"],
        env=[EnvVar(name="T", value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name="s", key="k", optional=True)))],
        inputs=[Parameter(name="p", default="1"), Artifact(name="in", path="/kolora/inputs/in", optional=True)],
        outputs=[
            S3Artifact(name="out", path="/kolora/outputs/out", key="{{workflow.name}}/out", archive=NoneArchiveStrategy()),
            Parameter(name="gate", value_from={"path": "/kolora/outputs/out/gate.txt", "default": "skipped"}),
        ],
        retry_strategy=RetryStrategy(limit=2, retry_policy="OnError"),
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        labels={"kolora.dev/stage": "x"},
    )
    arguments = [Parameter(name="profile", value="smoke")]
    with WorkflowTemplate(name="h", entrypoint="main", arguments=arguments) as w, DAG(name="main"):
        a = step(name="a")
        b = step(name="b", arguments=[Artifact(name="in", from_="{{tasks.a.outputs.artifacts.out}}")])
        a >> b
    workflow = parse_workflow(w.to_dict(), "hera")
    assert {t.name: t.dependencies for t in workflow.template("main").tasks} == {"a": (), "b": ("a",)}
    assert [(name, ref.name, ref.key, ref.optional) for name, ref in workflow.template("step").container.secret_env] == [
        ("T", "s", "k", True)
    ]


def test_rendered_pipeline_parses_when_present() -> None:
    path = REPO / "workflows" / "dist" / "kolora-pipeline.yaml"
    if not path.exists():
        pytest.skip("workflows/dist/kolora-pipeline.yaml not rendered yet")
    workflow = load_workflow(path)
    assert workflow.template(workflow.entrypoint).kind == "dag"
