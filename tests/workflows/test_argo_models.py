"""`RenderOptions.models_from`: base model weights from the fetch-models task, a key-only S3 artifact or a PVC."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import pytest
import yaml

from kolora_core.stages import STAGES
from tests.workflows.argo_objects import artifacts, tasks, templates
from workflows import fetch_models
from workflows.options import MODELS_KEY_DEFAULT, RenderOptions, run_parameters
from workflows.render import render_all

MODEL_READERS = [name for name, stage in STAGES.items() if "models" in stage.inputs]
MODELS_PATH = STAGES["train"].input_path("models")
KEY = "{{workflow.parameters.models-key}}"


def params(obj: dict) -> dict[str, str]:
    return {p["name"]: p["value"] for p in obj["spec"]["arguments"]["parameters"]}


@functools.cache
def render(**kwargs) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render_all(**kwargs).items()}


def test_readers_are_train_and_generate() -> None:
    assert MODEL_READERS == ["train", "generate"] and MODELS_PATH == "/kolora/inputs/models"


def test_default_is_fetch_and_has_a_fetch_models_task(template: dict) -> None:
    assert RenderOptions().models_from == "fetch"
    assert "fetch-models" in tasks(template) and "models-key" not in params(template)
    for name in MODEL_READERS:
        assert artifacts(templates(template)[name]["inputs"])["models"] == {"name": "models", "path": MODELS_PATH}
        args = artifacts(tasks(template)[name]["arguments"])
        assert args["models"]["from"] == "{{tasks.fetch-models.outputs.artifacts.models}}"
    assert all(v["name"] != "kolora-models" for v in template["spec"]["volumes"])


def test_s3_reads_a_key_only_artifact_at_the_models_key_parameter() -> None:
    objs = render(models_from="s3")
    tmpl = objs["kolora-pipeline.yaml"]
    assert "fetch-models" not in tasks(tmpl) and "fetch-models" not in templates(tmpl)
    assert params(tmpl)["models-key"] == MODELS_KEY_DEFAULT == "base-models/kolors"
    assert params(objs["kolora-run.yaml"])["models-key"] == MODELS_KEY_DEFAULT
    for name in MODEL_READERS:
        assert artifacts(templates(tmpl)[name]["inputs"])["models"] == {"name": "models", "path": MODELS_PATH, "s3": {"key": KEY}}
        assert "models" not in artifacts(tasks(tmpl)[name].get("arguments"))
        assert "fetch-models" not in (tasks(tmpl)[name].get("depends") or "")
    assert tasks(tmpl)["train"]["depends"] == "filter"


def test_s3_fetch_workflow_writes_the_key_with_the_pipelines_template() -> None:
    objs = render(models_from="s3")
    wf, tmpl = objs["kolora-fetch-models.yaml"], objs["kolora-pipeline.yaml"]
    assert wf["kind"] == "Workflow" and wf["metadata"]["generateName"] == "kolora-fetch-models-"
    assert wf["spec"]["entrypoint"] == "fetch-models" and list(templates(wf)) == ["fetch-models"]
    out = artifacts(templates(wf)["fetch-models"]["outputs"])["models"]
    assert out == {"name": "models", "path": "/kolora/outputs/models", "archive": {"none": {}}, "s3": {"key": KEY}}
    assert params(wf)["models-key"] == params(tmpl)["models-key"]
    default = templates(render()["kolora-pipeline.yaml"])["fetch-models"]  # the same container as in the fetch graph
    assert templates(wf)["fetch-models"]["container"] == default["container"]
    referenced = set(re.findall(r"\{\{workflow\.parameters\.([\w-]+)\}\}", yaml.safe_dump(wf)))
    assert referenced <= set(params(wf))


@pytest.mark.parametrize("claim", ["kolora-models", "shared-models"])
def test_pvc_mounts_the_claim_read_only_on_train_and_generate(claim: str) -> None:
    tmpl = render(models_from="pvc", models_pvc=claim)["kolora-pipeline.yaml"]
    assert "fetch-models" not in tasks(tmpl) and "models-key" not in params(tmpl)
    volumes = {v["name"]: v for v in tmpl["spec"]["volumes"]}
    assert volumes["kolora-models"] == {"name": "kolora-models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    for name, t in templates(tmpl).items():
        mounts = [m for m in t.get("container", {}).get("volumeMounts", []) if m["name"] == "kolora-models"]
        if name in MODEL_READERS:
            assert mounts == [{"name": "kolora-models", "mountPath": "/kolora/inputs/models", "readOnly": True}]
            assert "models" not in artifacts(t["inputs"]) and "models" not in artifacts(tasks(tmpl)[name].get("arguments"))
            assert "--models" in t["container"]["args"]
        else:
            assert mounts == []


def test_pvc_fetch_workflow_mounts_the_claim_read_write_at_the_output() -> None:
    wf = render(models_from="pvc")["kolora-fetch-models.yaml"]
    step = templates(wf)["fetch-models"]
    assert "outputs" not in step
    assert {"name": "kolora-models", "mountPath": "/kolora/outputs/models"} in step["container"]["volumeMounts"]
    volumes = {v["name"]: v for v in wf["spec"]["volumes"]}
    assert volumes["kolora-models"]["persistentVolumeClaim"] == {"claimName": "kolora-models"}
    assert "models-key" not in params(wf)


def test_default_render_commits_the_s3_fetch_workflow(objects: dict[str, dict]) -> None:
    """workflows/dist/ holds the fetch Workflow of `--models-from s3`; the pvc one is `kolora render --models-from pvc`."""
    assert objects["kolora-fetch-models.yaml"] == render(models_from="s3")["kolora-fetch-models.yaml"]
    assert objects["kolora-fetch-models.yaml"] != render(models_from="pvc")["kolora-fetch-models.yaml"]
    assert sorted(render(models_from="pvc")) == sorted(objects)


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
    assert names == ["kolora-fetch-models.yaml", "kolora-nightly.yaml", "kolora-pipeline.yaml", "kolora-run.yaml"]
    spec = yaml.safe_load((tmp_path / "kolora-pipeline.yaml").read_text())["spec"]
    assert {"name": "kolora-models", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in spec["volumes"]
    with pytest.raises(SystemExit):
        parser.parse_args(["render", "--models-from", "nfs"])
