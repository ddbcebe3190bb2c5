"""workflows/dist/ is what the hera definitions render; the one-off Workflow and the nightly CronWorkflow.

Regenerate the committed YAML with `make render` (python -m workflows.render), or run this file with
KOLORA_REGENERATE_WORKFLOWS=1 (never in CI).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import yaml

from workflows import render
from workflows.options import run_parameters


def test_committed_dist_is_up_to_date(rendered: dict[str, str]) -> None:
    if os.environ.get("KOLORA_REGENERATE_WORKFLOWS") == "1" and not os.environ.get("CI"):
        render.write(rendered, render.DIST)
    committed = sorted(p.name for p in render.DIST.glob("*.yaml"))
    assert committed == sorted(rendered), "run `python -m workflows.render` and commit workflows/dist/"
    diff = render.stale(rendered, render.DIST)
    assert diff == "", f"workflows/dist/ is stale: run `python -m workflows.render` and commit it\n{diff[:4000]}"


def test_check_flags_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(["--out", str(tmp_path), "--check"]) == 1  # nothing there yet
    assert render.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kolora-fetch-models.yaml", "kolora-nightly.yaml", "kolora-pipeline.yaml", "kolora-rbac.yaml", "kolora-run.yaml"
    ]  # fmt: skip
    assert render.main(["--out", str(tmp_path), "--check"]) == 0
    pipeline = tmp_path / "kolora-pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("limit: 2", "limit: 5", 1))
    capsys.readouterr()
    assert render.main(["--out", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr()
    assert "-      limit: 5" in out.out and "+      limit: 2" in out.out and "stale" in out.err


def test_the_default_out_is_workflows_dist_of_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was the absolute path of the installed workflows/dist: `kolora render` anywhere rewrote the committed files."""
    committed = {p.name: p.stat().st_mtime_ns for p in render.DIST.glob("*.yaml")}
    monkeypatch.chdir(tmp_path)
    assert render.main([]) == 0  # the default options: were this test to fail, DIST would be rewritten as it is
    assert len(list((tmp_path / "workflows" / "dist").glob("*.yaml"))) == len(committed)
    assert {p.name: p.stat().st_mtime_ns for p in render.DIST.glob("*.yaml")} == committed


@pytest.mark.parametrize(
    ("where", "advice"),
    [
        ("custom", "is stale: rerun this command without --check to rewrite it"),
        ("committed", "is stale: it holds the render of the default options, not of these: check them against another --out DIR"),
    ],
)
def test_check_advice_fits_the_out_and_the_options(
    where: str, advice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It always said to run `python -m workflows.render` and commit, which rewrites the committed default render."""
    out = tmp_path if where == "custom" else render.DIST
    assert render.main(["--check", "--no-gpu", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"{out} {advice}"


def test_kolora_render_has_the_same_options(tmp_path: Path) -> None:
    from kolora_core.cli import render as cli_render

    parser = argparse.ArgumentParser(prog="kolora")
    cli_render.register(parser.add_subparsers(dest="command"))
    flags = ["--artifact-repository-key", "my-key", "--service-account", "kolora", "--generate-parallelism", "2"]
    flags.append("--archive-logs")
    args = parser.parse_args(["render", "--out", str(tmp_path), "--no-gpu", *flags])
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kolora-fetch-models.yaml", "kolora-nightly.yaml", "kolora-pipeline.yaml", "kolora-rbac.yaml", "kolora-run.yaml"
    ]  # fmt: skip
    spec = yaml.safe_load((tmp_path / "kolora-pipeline.yaml").read_text())["spec"]
    assert spec["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "my-key"}
    assert spec["serviceAccountName"] == "kolora" == spec["executor"]["serviceAccountName"]
    assert spec["archiveLogs"] is True
    assert next(t for t in spec["templates"] if t["name"] == "pipeline")["parallelism"] == 2
    rbac = list(yaml.safe_load_all((tmp_path / "kolora-rbac.yaml").read_text()))
    assert {d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"} == {"kolora"}

    flags = ["--service-account", "", "--generate-parallelism", "0"]
    args = parser.parse_args(["render", "--out", str(tmp_path), "--no-gpu", *flags])
    assert args.func(args) == 0
    spec = yaml.safe_load((tmp_path / "kolora-pipeline.yaml").read_text())["spec"]
    assert "serviceAccountName" not in spec and spec["executor"] == {"serviceAccountName": "default"}
    assert "parallelism" not in next(t for t in spec["templates"] if t["name"] == "pipeline") and "archiveLogs" not in spec
    assert "nvidia.com/gpu" not in (tmp_path / "kolora-pipeline.yaml").read_text()

    gpu_flags = ["--gpus", "4", "--gpu-toleration", "pool=a100:NoExecute", "--gpu-node-selector", "gpu=h100"]
    args = parser.parse_args(["render", "--out", str(tmp_path), *gpu_flags])
    assert args.func(args) == 0
    rendered = yaml.safe_load((tmp_path / "kolora-pipeline.yaml").read_text())
    train = next(t for t in rendered["spec"]["templates"] if t["name"] == "train")
    assert train["container"]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert train["tolerations"] == [{"effect": "NoExecute", "key": "pool", "operator": "Equal", "value": "a100"}]
    assert train["nodeSelector"] == {"gpu": "h100"}


@pytest.mark.parametrize("entry", ["kolora", "workflows.render"])
@pytest.mark.parametrize("check", [False, True])
def test_out_that_is_a_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, check: bool) -> None:
    from kolora_core import cli

    taken = tmp_path / "dist"
    taken.write_text("not a directory")
    for out in (taken, taken / "sub"):  # the file itself, or a directory that would have to be made under it
        argv = ["--out", str(out), *(["--check"] if check and out == taken else [])]
        assert (cli.main(["render", *argv]) if entry == "kolora" else render.main(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {out}" in err and "directory" in err, err
    assert taken.read_text() == "not a directory"


@pytest.mark.parametrize("flag", ["--gpus", "--generate-parallelism"])
def test_negative_counts_are_refused_at_parse_time(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    from kolora_core import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["render", "--out", str(tmp_path / "out"), flag, "-1"])
    assert exit_.value.code == 2
    assert f"argument {flag}: -1 is negative" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpu-toleration", "a=b:Bogus"], "toleration 'a=b:Bogus': effect 'Bogus' is not one of NoSchedule, PreferNoSchedule"),
        (["--gpu-toleration", "a:noschedule"], "effect 'noschedule' is not one of"),
        (["--service-account", "Bad_Name!"], "'Bad_Name!' is not a ServiceAccount name: lowercase letters, digits"),
        (["--service-account=-sa"], "'-sa' is not a ServiceAccount name"),
        (["--service-account", "a" * 254], "is not a ServiceAccount name"),
        (["--hub-secret", "BAD SECRET"], "'BAD SECRET' is not a Secret name: lowercase letters, digits"),
        (["--hub-secret="], "'' is not a Secret name"),
        (["--models-from", "pvc", "--models-pvc", "x y"], "'x y' is not a PersistentVolumeClaim name"),
        (["--artifact-repository-configmap="], "'' is not a ConfigMap name"),
        (["--artifact-repository-configmap", "Repos"], "'Repos' is not a ConfigMap name"),
        (["--artifact-repository-key", "my key"], "'my key' is not a ConfigMap key: letters, digits, '-', '_' and '.'"),
        (["--artifact-repository-key="], "'' is not a ConfigMap key"),
        (["--artifact-repository-key", ".."], "'..' is not a ConfigMap key"),
        (["--artifact-repository-key", "..v1"], "'..v1' is not a ConfigMap key"),
        (["--artifact-repository-key", "k" * 254], "is not a ConfigMap key"),
    ],
)
def test_kubernetes_names_and_effects_are_refused_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Written verbatim they rendered (`effect: Bogus`, `serviceAccountName: Bad_Name!`, `claimName: x y`) and failed on
    the cluster later; the optional hub Secret of a bad name was silently never found."""
    from kolora_core import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["render", "--out", str(tmp_path / "out"), *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert exit_.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_valid_kubernetes_names_and_effects_render(tmp_path: Path) -> None:
    argv = ["--gpu-toleration", "pool:PreferNoSchedule", "--service-account", "team-a.kolora", "--out", str(tmp_path)]
    assert render.main(argv) == 0
    (pipeline,) = [d for d in yaml.safe_load_all((tmp_path / "kolora-pipeline.yaml").read_text()) if d]
    assert pipeline["spec"]["serviceAccountName"] == "team-a.kolora"
    train = next(t for t in pipeline["spec"]["templates"] if t["name"] == "train")
    assert train["tolerations"] == [{"effect": "PreferNoSchedule", "key": "pool", "operator": "Exists"}]
    assert render.main(["--service-account", "", "--out", str(tmp_path)]) == 0  # '' = the namespace's default
    assert render.main(["--artifact-repository-key", "Team_A.s3-v1", "--out", str(tmp_path)]) == 0  # capitals, '_': a key
    (pipeline,) = [d for d in yaml.safe_load_all((tmp_path / "kolora-pipeline.yaml").read_text()) if d]
    assert pipeline["spec"]["artifactRepositoryRef"]["key"] == "Team_A.s3-v1"


def test_files_say_how_to_use_them(rendered: dict[str, str]) -> None:
    assert rendered["kolora-pipeline.yaml"].startswith("# Rendered by")
    assert "argo template create" in rendered["kolora-pipeline.yaml"].splitlines()[1]
    assert "argo submit" in rendered["kolora-run.yaml"].splitlines()[1]
    assert "argo cron create" in rendered["kolora-nightly.yaml"].splitlines()[1]
    assert "kubectl apply" in rendered["kolora-rbac.yaml"].splitlines()[1]


def test_oneoff_workflow_references_the_template(objects: dict[str, dict], template: dict) -> None:
    run = objects["kolora-run.yaml"]
    assert run["kind"] == "Workflow" and run["metadata"]["generateName"] == "kolora-run-"
    assert run["spec"]["workflowTemplateRef"] == {"name": template["metadata"]["name"]}
    assert set(run["spec"]) == {"workflowTemplateRef", "arguments"}
    given = {p["name"]: p["value"] for p in run["spec"]["arguments"]["parameters"]}
    defaults = {p.name: p.default for p in run_parameters()}
    assert given == {k: v for k, v in defaults.items() if k not in ("image-registry", "image-tag")}


def test_nightly_cron(objects: dict[str, dict], template: dict) -> None:
    cron = objects["kolora-nightly.yaml"]
    assert cron["kind"] == "CronWorkflow" and cron["metadata"]["name"] == "kolora-nightly"
    spec = cron["spec"]
    assert spec["schedules"] == ["0 2 * * *"] and "schedule" not in spec
    assert spec["timezone"] == "UTC" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert spec["workflowSpec"]["workflowTemplateRef"] == {"name": template["metadata"]["name"]}
    # an unchanged night ends "unchanged" without training (manual runs keep the template's `train`)
    assert spec["workflowSpec"]["arguments"]["parameters"] == [
        {"name": "profile", "value": "full"},
        {"name": "on-unchanged", "value": "skip"},
        {"name": "dataset-key", "value": ""},  # '' = the profile's dataset; the chart's cron.datasetKey sets it
    ]
    assert spec["workflowSpec"]["workflowMetadata"]["labels"]["kolora.dev/trigger"] == "nightly"


def test_a_write_stopped_midway_leaves_each_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while `kolora render` writes: every file is its old or its new self (never a truncated YAML that
    `kubectl apply` would take), and nothing half-written is left beside them."""
    (tmp_path / "b.yaml").write_text("old: b\n")
    renamed: list[str] = []

    def stop_at_the_second(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if renamed:
            raise KeyboardInterrupt
        renamed.append(str(dst))
        os.rename(src, dst)

    monkeypatch.setattr(render.os, "replace", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        render.write({"a.yaml": "new: a\n", "b.yaml": "new: b\n"}, tmp_path)
    assert (tmp_path / "a.yaml").read_text() == "new: a\n" and (tmp_path / "b.yaml").read_text() == "old: b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml"]
