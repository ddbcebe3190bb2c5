"""`RenderOptions.models_from`: base model weights and scorers from the fetch-models task, key-only S3 artifacts or a PVC."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import pytest
import yaml

from kolora_core.stages import STAGES
from tests.workflows.argo_objects import artifacts, tasks, templates
from tests.workflows.conftest import RBAC_FILE
from workflows import fetch_models
from workflows.options import MODELS_KEY_DEFAULT, SCORERS_KEY_DEFAULT, RenderOptions, run_parameters
from workflows.render import render_all

MODEL_READERS = [name for name, stage in STAGES.items() if "models" in stage.inputs]
MODELS_PATH = STAGES["train"].input_path("models")
KEY = "{{workflow.parameters.models-key}}"
SCORERS_KEY = "{{workflow.parameters.scorers-key}}"
SCORERS_PATH = STAGES["evaluate"].input_path("scorers")
# artifact -> (its readers, the key parameter of models_from="s3", the claim's subPath of models_from="pvc")
STORED = {"models": (MODEL_READERS, KEY, "models"), "scorers": (["evaluate"], SCORERS_KEY, "scorers")}


def params(obj: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in obj["spec"]["arguments"]["parameters"]}


@functools.cache
def render(**kwargs) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render_all(**kwargs).items() if name != RBAC_FILE}


def test_readers_are_train_and_generate_and_evaluate_for_the_scorers() -> None:
    assert MODEL_READERS == ["train", "generate"] and MODELS_PATH == "/kolora/inputs/models"
    assert [n for n, s in STAGES.items() if "scorers" in s.inputs] == ["evaluate"] and SCORERS_PATH == "/kolora/inputs/scorers"


def test_default_is_fetch_and_has_a_fetch_models_task(template: dict) -> None:
    assert RenderOptions().models_from == "fetch"
    assert "fetch-models" in tasks(template) and "models-key" not in params(template)
    for name in MODEL_READERS:
        assert artifacts(templates(template)[name]["inputs"])["models"] == {"name": "models", "path": MODELS_PATH}
        args = artifacts(tasks(template)[name]["arguments"])
        assert args["models"]["from"] == "{{tasks.fetch-models.outputs.artifacts.models}}"
    assert all(v["name"] != "kolora-models" for v in template["spec"]["volumes"])
    scorers = artifacts(tasks(template)["evaluate"]["arguments"])["scorers"]
    assert scorers["from"] == "{{tasks.fetch-models.outputs.artifacts.scorers}}"


def test_s3_reads_a_key_only_artifact_at_the_models_key_parameter() -> None:
    objs = render(models_from="s3")
    tmpl = objs["kolora-pipeline.yaml"]
    assert "fetch-models" not in tasks(tmpl) and "fetch-models" not in templates(tmpl)
    assert params(tmpl)["models-key"] == MODELS_KEY_DEFAULT == "base-models/kolors"
    assert params(tmpl)["scorers-key"] == SCORERS_KEY_DEFAULT == "base-models/scorers"
    assert params(objs["kolora-run.yaml"])["models-key"] == MODELS_KEY_DEFAULT
    assert params(objs["kolora-run.yaml"])["scorers-key"] == SCORERS_KEY_DEFAULT
    for art, (readers, key, _) in STORED.items():
        for name in readers:
            path = STAGES[name].input_path(art)
            assert artifacts(templates(tmpl)[name]["inputs"])[art] == {"name": art, "path": path, "s3": {"key": key}}
            assert art not in artifacts(tasks(tmpl)[name].get("arguments"))
            assert "fetch-models" not in (tasks(tmpl)[name].get("depends") or "")
    assert tasks(tmpl)["train"]["depends"] == "filter && check-changes"


def test_s3_fetch_workflow_writes_the_key_with_the_pipelines_template() -> None:
    objs = render(models_from="s3")
    wf, tmpl = objs["kolora-fetch-models.yaml"], objs["kolora-pipeline.yaml"]
    assert wf["kind"] == "Workflow" and wf["metadata"]["generateName"] == "kolora-fetch-models-"
    assert wf["spec"]["entrypoint"] == "fetch-models" and list(templates(wf)) == ["fetch-models"]
    outs = artifacts(templates(wf)["fetch-models"]["outputs"])
    for art, (_, key, _) in STORED.items():
        assert outs[art] == {"name": art, "path": f"/kolora/outputs/{art}", "archive": {"none": {}}, "s3": {"key": key}}
    assert params(wf)["models-key"] == params(tmpl)["models-key"] and params(wf)["scorers-key"] == params(tmpl)["scorers-key"]
    default = templates(render()["kolora-pipeline.yaml"])["fetch-models"]  # the same container as in the fetch graph
    assert templates(wf)["fetch-models"]["container"] == default["container"]
    referenced = set(re.findall(r"\{\{workflow\.parameters\.([\w-]+)\}\}", yaml.safe_dump(wf)))
    assert referenced <= set(params(wf))


@pytest.mark.parametrize("claim", ["kolora-models", "shared-models"])
def test_pvc_mounts_the_claim_read_only_with_a_subpath_per_directory(claim: str) -> None:
    """The claim holds models/ and scorers/; each reader mounts the one it reads at its input path."""
    tmpl = render(models_from="pvc", models_pvc=claim)["kolora-pipeline.yaml"]
    assert "fetch-models" not in tasks(tmpl) and "models-key" not in params(tmpl) and "scorers-key" not in params(tmpl)
    volumes = {v["name"]: v for v in tmpl["spec"]["volumes"]}
    assert volumes["kolora-models"] == {"name": "kolora-models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    for name, t in templates(tmpl).items():
        mounts = [m for m in t.get("container", {}).get("volumeMounts", []) if m["name"] == "kolora-models"]
        wanted = [
            {"name": "kolora-models", "mountPath": STAGES[name].input_path(art), "subPath": sub, "readOnly": True}
            for art, (readers, _, sub) in STORED.items()
            if name in readers
        ]
        assert mounts == wanted, name
        for mount in wanted:
            art = mount["subPath"]
            assert art not in artifacts(t["inputs"]) and art not in artifacts(tasks(tmpl)[name].get("arguments"))
            assert f"--{art}" in t["container"]["args"]


def test_pvc_fetch_workflow_mounts_the_claim_root_read_write_at_the_outputs() -> None:
    """models/ and scorers/ land at the claim's root; the commit's staging (/kolora/outputs/.staging) is on the claim too."""
    wf = render(models_from="pvc")["kolora-fetch-models.yaml"]
    step = templates(wf)["fetch-models"]
    assert "outputs" not in step
    assert {"name": "kolora-models", "mountPath": "/kolora/outputs"} in step["container"]["volumeMounts"]
    assert {STAGES["fetch-models"].output_path(a).rsplit("/", 1)[0] for a in STORED} == {"/kolora/outputs"}
    volumes = {v["name"]: v for v in wf["spec"]["volumes"]}
    assert volumes["kolora-models"]["persistentVolumeClaim"] == {"claimName": "kolora-models"}
    assert "models-key" not in params(wf)


def test_default_render_commits_the_s3_fetch_workflow(objects: dict[str, dict]) -> None:
    """workflows/dist/ holds the fetch Workflow of `--models-from s3`; the pvc one is `kolora render --models-from pvc`."""
    assert objects["kolora-fetch-models.yaml"] == render(models_from="s3")["kolora-fetch-models.yaml"]
    assert objects["kolora-fetch-models.yaml"] != render(models_from="pvc")["kolora-fetch-models.yaml"]
    assert sorted(render(models_from="pvc")) == sorted(objects)  # the RBAC manifest aside


def test_fetch_mode_has_no_fetch_workflow_and_bad_modes_fail() -> None:
    with pytest.raises(ValueError, match="s3"):
        fetch_models.build(RenderOptions())
    with pytest.raises(ValueError, match="models_from"):
        RenderOptions(models_from="nfs")  # type: ignore[arg-type]
    assert "models-key" not in {p.name for p in run_parameters()}


def test_kolora_render_models_from(tmp_path: Path) -> None:
    from kolora_core.cli import render as cli_render

    parser = argparse.ArgumentParser(prog="kolora")
    cli_render.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["render", "--out", str(tmp_path), "--no-gpu", "--models-from", "pvc", "--models-pvc", "weights"])
    assert args.func(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(render_all())
    spec = yaml.safe_load((tmp_path / "kolora-pipeline.yaml").read_text())["spec"]
    assert {"name": "kolora-models", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in spec["volumes"]
    with pytest.raises(SystemExit):
        parser.parse_args(["render", "--models-from", "nfs"])
