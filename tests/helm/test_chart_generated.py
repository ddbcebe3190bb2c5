"""The chart's generated files are what `python -m workflows.helm` generates now (no drift from the hera objects).

Regenerate with `make helm-render` (python -m workflows.helm), or run this file with KOLORA_REGENERATE_HELM=1
(never in CI).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from workflows import helm
from workflows.options import project_version


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return helm.generate()


def test_generated_files_are_up_to_date(generated: dict[str, str]) -> None:
    if os.environ.get("KOLORA_REGENERATE_HELM") == "1" and not os.environ.get("CI"):
        helm.main([])
    diff = helm.stale(generated)
    assert diff == "", f"helm/kolora is stale: run `python -m workflows.helm` (make helm-render) and commit it\n{diff[:4000]}"


def test_check_flags_a_stale_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "kolora"
    shutil.copytree(helm.CHART, chart)
    assert helm.main(["--chart", str(chart), "--check"]) == 0
    template = chart / helm.PIPELINE_FILE
    template.write_text(template.read_text().replace("limit: 2", "limit: 5", 1))
    (chart / helm.CHART_FILE).write_text(
        re.sub(r"(?m)^appVersion: .*$", 'appVersion: "0.0.0"', (chart / helm.CHART_FILE).read_text())
    )
    capsys.readouterr()
    assert helm.main(["--chart", str(chart), "--check"]) == 1
    out = capsys.readouterr()
    assert "-      limit: 5" in out.out and 'appVersion: "0.0.0"' in out.out and "stale" in out.err
    assert helm.main(["--chart", str(chart)]) == 0
    assert helm.main(["--chart", str(chart), "--check"]) == 0


def test_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project_version()
    assert chart["apiVersion"] == "v2" and chart["name"] == "kolora"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"]), "chart version: SemVer, bumped on every chart change"


def test_argo_expressions_are_escaped_for_helm() -> None:
    assert helm.escape_argo("key: '{{workflow.name}}/x-{{inputs.parameters.shard}}'") == (
        "key: '{{`{{workflow.name}}`}}/x-{{`{{inputs.parameters.shard}}`}}'"
    )
    with pytest.raises(ValueError, match="backtick"):
        helm.escape_argo("{{=sprig.trim(`x`)}}")


def test_every_argo_expression_of_the_template_survives_helm(generated: dict[str, str]) -> None:
    """Each {{...}} of workflows/dist is escaped in the generated template (none is evaluated by Helm)."""
    from workflows.render import render_all

    argo = set(re.findall(r"\{\{[^{}]*\}\}", render_all()["kolora-pipeline.yaml"]))
    escaped = set(re.findall(r"\{\{`(\{\{[^`]*\}\})`\}\}", generated[helm.PIPELINE_FILE]))
    assert argo and argo == escaped


def test_gpu_steps_are_the_gpu_stages() -> None:
    from kolora_core.stages import STAGES
    from workflows import pipeline
    from workflows.render import to_yaml

    obj = yaml.safe_load(to_yaml(pipeline.build()))
    assert set(helm.gpu_steps(obj)) == {name for name, stage in STAGES.items() if stage.gpu}


def test_values_block_covers_every_step(generated: dict[str, str]) -> None:
    from workflows import pipeline
    from workflows.render import to_yaml

    values = yaml.safe_load(generated[helm.VALUES_FILE])
    steps = [t["name"] for t in yaml.safe_load(to_yaml(pipeline.build()))["spec"]["templates"] if "container" in t]
    assert list(values["stages"]) == steps
    assert set(values["cpuOnly"]) == {"resources", "activeDeadlineSeconds", "shmSize"}
