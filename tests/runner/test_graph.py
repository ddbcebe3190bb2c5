"""What the promotion loop's graph needs from the runner (graph.yaml): `when` with `||`, `depends: x.Succeeded`
after a skippable task, fanned-out shards, globalName outputs and the onExit handler with workflow.status."""

from __future__ import annotations

from typing import Any

import yaml

from kolora_core.runner.template import load_workflow
from kolora_core.storage.s3 import S3Store
from tests.argo_schema import VERSIONS, require_crds, schema_errors

from .conftest import TEMPLATES


def phases(result: Any) -> dict[str, str]:
    return {n.node: n.phase for n in result.nodes}


def test_the_test_templates_are_valid_argo() -> None:
    """The runner's fixtures model Argo only if Argo accepts them: strict CRD validation, both versions."""
    require_crds()
    for path in sorted(TEMPLATES.glob("*.yaml")):
        for version in VERSIONS:
            assert schema_errors(yaml.safe_load(path.read_text()), version) == [], (path.name, version)


def test_a_changed_run_trains_renders_every_shard_and_notifies(run: Any, store: S3Store) -> None:
    result, console = run("graph.yaml")
    assert result.ok, console
    assert phases(result) == {
        "check-changes": "Succeeded",
        "train": "Succeeded",
        "generate.0": "Succeeded",
        "generate.1": "Succeeded",
        "evaluate": "Succeeded",
        "onExit": "Succeeded",
    }
    assert "[evaluate] evaluated 000.txt,001.txt" in console  # both shards' keys read as one directory
    assert (result.run_dir / "generate.1" / "images" / "001.txt").read_text() == "image of shard 1 with weights"
    assert "[onExit] notify status=Succeeded gate=passed" in console  # globalName export, workflow.status
    keys = store.list_keys(f"{result.run_id}/images/")
    assert sorted(k.rsplit("/", 2)[-2] for k in keys) == ["shard-0", "shard-1"]


def test_an_unchanged_nightly_skips_train_and_omits_what_follows(run: Any) -> None:
    result, console = run("graph.yaml", parameters={"fingerprint": "same", "on-unchanged": "skip"})
    assert result.ok, console
    got = phases(result)
    assert got["train"] == "Skipped" and "when 'unchanged == changed || skip == train' evaluated false" in console
    assert got["generate"] == "Omitted" and got["evaluate"] == "Omitted"  # depends: train.Succeeded, not plain `train`
    assert "generate.0" not in got
    # nothing exported gate: Argo hands the exit handler the variable verbatim
    assert "[onExit] notify status=Succeeded gate={{workflow.outputs.parameters.gate}}" in console


def test_a_manual_run_trains_even_when_unchanged(run: Any) -> None:
    result, _ = run("graph.yaml", parameters={"fingerprint": "same"})
    assert result.ok and result.node("train").phase == "Succeeded" and result.node("evaluate").phase == "Succeeded"


def test_the_exit_handler_runs_after_a_failure_and_can_fail_the_run(run: Any) -> None:
    result, console = run("graph.yaml", parameters={"evaluate-exit": "3"})
    assert not result.ok and result.failed is not None and result.failed.node == "evaluate"
    assert "[onExit] notify status=Failed" in console
    result, console = run("graph.yaml", parameters={"notify-exit": "1"})
    assert not result.ok and result.failed is not None and result.failed.node == "onExit"
    assert "evaluate" in console and "FAILED at step onExit" in result.summary


def test_the_graph_parses_with_its_exit_handler_and_exports() -> None:
    workflow = load_workflow(TEMPLATES / "graph.yaml")
    assert workflow.on_exit == "notify"
    gate = workflow.template("evaluate").output_parameters[0]
    assert (gate.name, gate.global_name, gate.value_from_default) == ("gate", "gate", "skipped")
