"""`kolora submit`: parameters checked locally, one clear line when argo-server is not there."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import yaml

from kolora_core.cli import submit as cli_submit
from kolora_core.errors import KoloraError
from tests.argo_schema import VERSIONS, require_crds, schema_errors


def run_submit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `kolora submit ...` the way kolora_core.cli.main does (one-line KoloraError, exit code)."""
    parser = argparse.ArgumentParser(prog="kolora")
    cli_submit.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["submit", *argv])
    try:
        code = args.func(args)
    except KoloraError as exc:
        print(f"kolora submit: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    out = capsys.readouterr()
    return code, out.out, out.err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_closed_port_gives_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code, out, err = run_submit(["--host", f"127.0.0.1:{port}", "-p", "steps=10"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1, err
    assert f"argo-server at https://127.0.0.1:{port} does not answer (connection refused)" in err


def test_closed_port_through_the_kolora_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from kolora_core.cli import main
    except ImportError as exc:  # another subcommand of the CLI is not in this checkout yet
        pytest.skip(f"kolora CLI not importable: {exc}")
    monkeypatch.setenv("ARGO_SERVER", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("ARGO_SECURE", "false")
    try:
        code = main(["submit", "-p", "profile=smoke"])
    except ImportError as exc:
        pytest.skip(f"kolora CLI not importable: {exc}")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("kolora submit: error: argo-server at http://127.0.0.1:"), err


def test_no_server_configured(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGO_SERVER", raising=False)
    code, _, err = run_submit([], capsys)
    assert code == 2 and "pass --host or set ARGO_SERVER" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "stpes=10"], "-p stpes: unknown parameter; did you mean steps?"),
        (["-p", "zzzq=10"], "-p zzzq: unknown parameter; choose from profile, config,"),
        (["-p", "steps"], "expected NAME=VALUE"),
        (["-p", "steps=many"], "-p parameters: config field 'train.steps'"),
        (["-p", "config=train: {stepz: 3}"], "-p config: unknown config key 'train.stepz'"),
        (["-p", "profile=huge"], "unknown profile 'huge'"),
    ],
)
def test_parameters_are_checked_before_anything_is_sent(argv, message, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_submit(["--host", f"127.0.0.1:{closed_port()}", *argv], capsys)
    assert code == 2 and message in err and "argo-server" not in err, err


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ("generate-shards=0", "-p generate-shards='0' (--generate.shards) is refused before any step runs: config field"),
        ("generate-shards=abc", "-p generate-shards='abc' (--generate.shards) is refused before any step runs: config field"),
        ("on-unchanged=maybe", "parameter 'on-unchanged' is 'maybe'; allowed: train, skip"),
    ],
)
def test_the_template_checks_of_kolora_run_refuse_before_submitting(
    parameter: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `kolora run` refuses before a step (a template enum, a value feeding a stage flag) submit refuses too,
    in the same words; --no-validate (the cluster runs another version) leaves them to the cluster."""
    code, out, err = run_submit(["--dry-run", "-p", parameter], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    code, out, err = run_submit(["--dry-run", "--no-validate", "-p", parameter], capsys)
    name, _, value = parameter.partition("=")
    assert code == 0 and {"name": name, "value": value} in yaml.safe_load(out)["spec"]["arguments"]["parameters"], err


def test_config_errors_name_what_the_user_gave(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    config = tmp_path / "x" / "c1.yaml"
    config.parent.mkdir()
    config.write_text("trian: {steps: 3}\n", encoding="utf-8")
    for extra in ([], ["-p", "steps=3"]):
        code, out, err = run_submit(["--dry-run", "--config", str(config), *extra], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"--config {config}" in err and "unknown config key 'trian'" in err and str(tmp_path / "x") in err, err


@pytest.mark.parametrize("validate", [[], ["--no-validate"]])
def test_a_bad_publish_prefix_is_refused_on_the_laptop(capsys: pytest.CaptureFixture[str], validate: list[str]) -> None:
    """It failed on the cluster at the champion step, after ingest and filter had run."""
    code, out, err = run_submit(["--dry-run", "-p", "publish-prefix=../x", *validate], capsys)
    assert code == 2 and out == "" and err.startswith("kolora submit: error: -p publish-prefix='../x': give the key prefix")


@pytest.mark.parametrize("validate", [[], ["--no-validate"]])
def test_the_release_bucket_takes_the_rule_of_its_endpoint(capsys: pytest.CaptureFixture[str], validate: list[str]) -> None:
    """GCS takes '_' ('my_team_bucket' exists there); the template's own endpoint, unseen here, takes S3's rule."""
    gcs = ["-p", "s3-endpoint=https://storage.googleapis.com", "-p", "s3-bucket=my_team_bucket"]
    code, out, err = run_submit(["--dry-run", *gcs, *validate], capsys)
    assert code == 0 and "my_team_bucket" in out, err
    code, out, err = run_submit(["--dry-run", "-p", "s3-bucket=my_team_bucket", *validate], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(
        "kolora submit: error: -p s3-bucket='my_team_bucket' is not an S3 bucket name (S3's rule, for the template's "
        "s3-endpoint): use 3-63 lowercase"
    ) and err.endswith("a GCS bucket takes GCS's rule with -p s3-endpoint=https://storage.googleapis.com\n"), err


@pytest.mark.parametrize("validate", [[], ["--no-validate"]])
def test_a_config_file_that_cannot_be_read_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path, validate: list[str]) -> None:
    """A .yaml that is not UTF-8 was a UnicodeDecodeError traceback; a directory was '--config DIR: Is a directory'."""
    binary = tmp_path / "run.yaml"
    binary.write_bytes(b"\xff\xfetrain: {}\n")
    for config, problem in ((binary, "is not UTF-8 (byte 0xff on line 1): re-save it as UTF-8"),
                            (tmp_path, "is a directory: pass a YAML, JSON or TOML file")):  # fmt: skip
        code, out, err = run_submit(["--dry-run", "--config", str(config), *validate], capsys)
        assert (code, out, err) == (2, "", f"kolora submit: error: --config {config} {problem}\n")


@pytest.mark.parametrize("validate", [[], ["--no-validate"]])
def test_a_path_in_p_config_points_to_config(capsys: pytest.CaptureFixture[str], tmp_path, validate: list[str]) -> None:
    config = tmp_path / "c1.yaml"
    config.write_text("train: {steps: 3}\n", encoding="utf-8")
    code, out, err = run_submit(["--dry-run", *validate, "-p", f"config={config}"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"-p config holds the run config's text, not a path ('{config}'): pass --config {config}" in err, err


def test_dry_run_prints_a_valid_workflow(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train: {batch_size: 2}\n", encoding="utf-8")
    code, out, _ = run_submit(["--dry-run", "-n", "ml", "-p", "profile=smoke", "--config", str(config)], capsys)
    assert code == 0
    wf = yaml.safe_load(out)
    assert wf["metadata"] == {"generateName": "kolora-run-", "namespace": "ml", "labels": wf["metadata"]["labels"]}
    assert wf["spec"]["workflowTemplateRef"] == {"name": "kolora-pipeline"}
    assert wf["spec"]["arguments"]["parameters"] == [
        {"name": "profile", "value": "smoke"},
        {"name": "config", "value": "train: {batch_size: 2}\n"},
    ]
    require_crds()
    for version in VERSIONS:
        assert schema_errors(wf, version) == []


@pytest.mark.parametrize("validate", [[], ["--no-validate"]])
def test_a_prompts_file_travels_as_its_prompts(
    capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch, validate: list[str]
) -> None:
    """The pods have neither this working directory nor its files: the `config` sent holds the prompts, not the path;
    a missing prompts file is one line before anything is sent, even unvalidated (a pod could not read it either)."""
    story = "- {prompt: a girl singing, seed: 7}\n- {prompt: the stage, size: 512}\n"
    (tmp_path / "s20.yaml").write_text(story, encoding="utf-8")
    (tmp_path / "pf.json").write_text('{"generate": {"prompts_file": "s20.yaml", "steps": 9}}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a relative path is read from where the user runs kolora submit
    for argv in (["--config", "pf.json"], ["-p", "config=generate: {prompts_file: s20.yaml, steps: 9}"]):
        code, out, err = run_submit(["--dry-run", *validate, *argv], capsys)
        assert code == 0, err
        sent = yaml.safe_load(yaml.safe_load(out)["spec"]["arguments"]["parameters"][0]["value"])
        assert sent == {
            "generate": {
                "steps": 9,
                "prompts": [
                    {"prompt": "a girl singing", "negative_prompt": "", "seed": 7},
                    {"prompt": "the stage", "negative_prompt": "", "seed": 0, "width": 512, "height": 512},
                ],
                "prompts_from": "s20.yaml",
            }
        }
    code, out, err = run_submit(["--dry-run", *validate, "-p", "config=generate: {prompts_file: nope.yaml}"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("kolora submit: error: prompts file nope.yaml does not exist: set generate.prompts_file"), err


def _sent_shards(out: str) -> str:
    return next(p["value"] for p in yaml.safe_load(out)["spec"]["arguments"]["parameters"] if p["name"] == "generate-shards")


def test_more_generate_shards_than_prompts_are_refused_before_anything_is_sent(capsys: pytest.CaptureFixture[str]) -> None:
    """`-p generate-shards=16` over the 8-prompt story scheduled 8 GPU pods that downloaded the models (GBs) and rendered
    nothing; as many shards as prompts are sent; --no-validate (another version on the cluster) leaves it to the pods."""
    code, out, err = run_submit(["--host", f"127.0.0.1:{closed_port()}", "-p", "generate-shards=16"], capsys)
    assert (code, out) == (2, ""), err
    assert err == (
        "kolora submit: error: -p generate-shards=16: the story has 8 prompts (profile full), so 8 of the 16 shards would "
        "render nothing (each a GPU pod that downloads the models first); pass -p generate-shards=8 or fewer\n"
    )
    code, out, err = run_submit(["--dry-run", "-p", "generate-shards=8"], capsys)
    assert code == 0 and _sent_shards(out) == "8", err
    code, out, err = run_submit(["--dry-run", "--no-validate", "-p", "generate-shards=16"], capsys)
    assert code == 0 and _sent_shards(out) == "16", err


def _story(count: int) -> str:
    return "[" + ", ".join(f"{{prompt: p{i}, seed: {i}}}" for i in range(count)) + "]"


@pytest.mark.parametrize("given", ["-p prompts", "-p config", "--config", "prompts file"])
def test_generate_shards_are_counted_against_the_story_submitted(
    given: str, capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The story the pods will split, not the profile's 8: three prompts take at most 3 shards, ten (in a run config
    whose grid holds them) 10; the refusal names where the prompts were given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "three.yaml").write_text(f"prompts: {_story(3)}\n", encoding="utf-8")
    (tmp_path / "ten.yaml").write_text(f"prompts: {_story(10)}\n", encoding="utf-8")
    (tmp_path / "run3.yaml").write_text(f"generate: {{prompts: {_story(3)}}}\n", encoding="utf-8")
    (tmp_path / "run10.json").write_text(
        json.dumps({"generate": {"prompts": [{"prompt": f"p{i}"} for i in range(10)]}, "evaluate": {"grid_rows": 5}}),
        encoding="utf-8",
    )
    grid = "evaluate: {grid_rows: 5}"
    three, ten, where = {  # the arguments giving 3 and 10 prompts, and where the refusal says they come from
        "-p prompts": (["-p", f"prompts={_story(3)}"], None, "-p prompts"),
        "-p config": (["-p", f"config=generate: {{prompts: {_story(3)}}}"],
                      ["-p", f"config={{generate: {{prompts: {_story(10)}}}, {grid}}}"], "-p config"),
        "--config": (["--config", "run3.yaml"], ["--config", "run10.json"], "--config run3.yaml"),
        "prompts file": (["-p", "config=generate: {prompts_file: three.yaml}"],
                         ["-p", f"config={{generate: {{prompts_file: ten.yaml}}, {grid}}}"],
                         "three.yaml, the generate.prompts_file of -p config"),
    }[given]  # fmt: skip
    code, out, err = run_submit(["--dry-run", *three, "-p", "generate-shards=4"], capsys)
    assert (code, out) == (2, ""), err
    assert err == (
        f"kolora submit: error: -p generate-shards=4: the story has 3 prompts ({where}), so 1 of the 4 shards would "
        "render nothing (each a GPU pod that downloads the models first); pass -p generate-shards=3 or fewer\n"
    )
    code, out, err = run_submit(["--dry-run", *three, "-p", "generate-shards=3"], capsys)
    assert code == 0 and _sent_shards(out) == "3", err
    if ten is not None:  # ten as -p prompts: the single-value check sees no grid that holds them
        code, out, err = run_submit(["--dry-run", *ten, "-p", "generate-shards=10"], capsys)
        assert code == 0 and _sent_shards(out) == "10", err
        code, out, err = run_submit(["--dry-run", *ten, "-p", "generate-shards=11"], capsys)
        assert code == 2 and "-p generate-shards=11: the story has 10 prompts" in err, err


@pytest.mark.parametrize(("chosen", "written"), [([], "smoke"), (["-p", "profile=smoke"], "full"), ([], "nonexistent")])
def test_a_profile_in_the_config_that_is_not_the_chosen_one_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path, chosen: list[str], written: str
) -> None:
    """The pods run the `profile` parameter's profile: a file's other profile would be dropped silently."""
    (tmp_path / "p.yaml").write_text(f"profile: {written}\n", encoding="utf-8")
    code, out, err = run_submit(["--dry-run", *chosen, "--config", str(tmp_path / "p.yaml")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"--config {tmp_path / 'p.yaml'} sets profile '{written}', not the chosen '{'smoke' if chosen else 'full'}'" in err
    assert "-p profile=" in err, err


HOW = "which the pods cannot read: upload the folder into the artifact store with `kolora upload /data/imgs datasets/<name>"


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (
            ["-p", "dataset=/data/imgs"],
            None,
            f"-p dataset=/data/imgs is a path on this machine, {HOW}",
        ),
        (["--no-validate", "-p", "dataset=./imgs"], None, "-p dataset=./imgs is a path on this machine"),
        (
            ["-p", "dataset=modelscope:///data/x.parquet"],
            None,
            "pods cannot read: upload its folder into the artifact store with `kolora upload /data datasets/<name> --s3-endpoint",
        ),
        (
            ["-p", "dataset=file:///data/imgs"],
            None,
            "`kolora upload /data/imgs datasets/<name> --s3-endpoint <url> --bucket <bucket>`",
        ),
        (["-p", "dataset=/data/my imgs"], None, "`kolora upload '/data/my imgs' datasets/<name> --s3-endpoint"),
        (["-p", "dataset-key=s3://my-bucket/datasets/mine"], None, "-p dataset-key='s3://my-bucket/datasets/mine': give the key"),
        (["-p", "dataset-key=/datasets/mine"], None, "no scheme, bucket, leading '/', empty or '..' parts"),
        (["-p", "dataset-key=datasets/mine "], None, "-p dataset-key='datasets/mine ': give the key prefix"),
        (["-p", "dataset-key=../mine"], None, "-p dataset-key='../mine': give the key prefix"),
        ([], "ingest: {source: /data/imgs}", "ingest.source /data/imgs (--config CONFIG) is a path on this machine"),
        (["-p", "config=ingest: {source: imgs}"], None, "ingest.source imgs (-p config) is a path on this machine"),
        (["-p", "dataset=modelscope://a/b", "-p", "dataset-key=datasets/mine/"], None, "give -p dataset or -p dataset-key"),
    ],
)
def test_a_dataset_on_this_machine_is_refused_with_the_way_in(
    argv: list[str], config: str | None, message: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """The pods see the store and the hub, never the laptop: refused before anything is sent, saying what to do."""
    extra = []
    if config is not None:
        (tmp_path / "c.yaml").write_text(config + "\n", encoding="utf-8")
        extra = ["--config", str(tmp_path / "c.yaml")]
    code, out, err = run_submit(["--dry-run", *argv, *extra], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert message.replace("CONFIG", str(tmp_path / "c.yaml")) in err, err
    if "kolora upload" in message:  # the checked way in, not a sync that skips kolora's upload checks
        assert err.rstrip().endswith("and pass -p dataset-key=datasets/<name>") and "sync" not in err, err


def test_uploaded_images_go_by_their_key(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("ingest: {source: /data/imgs}\n", encoding="utf-8")  # the key wins in the pod
    for argv in (
        ["-p", "dataset-key=datasets/mine/"],
        ["-p", "dataset-key=datasets/mine/", "--config", str(tmp_path / "c.yaml")],
    ):
        code, out, err = run_submit(["--dry-run", *argv], capsys)
        assert code == 0, err
        # the trailing '/' is dropped: Argo fetches the key as one object first (a folder marker would arrive as a file)
        assert {"name": "dataset-key", "value": "datasets/mine"} in yaml.safe_load(out)["spec"]["arguments"]["parameters"]
    code, _, err = run_submit(["--dry-run", "-p", "dataset=modelscope://AI-ModelScope/lowres_anime"], capsys)
    assert code == 0, err


class _FakeArgoServer(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeArgoServer.received.append((self.path, dict(self.headers), body))
        workflow = body["workflow"]
        workflow["metadata"]["name"] = workflow["metadata"]["generateName"] + "abcde"
        payload = json.dumps(workflow).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def test_submit_creates_the_workflow(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeArgoServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ARGO_SERVER", f"127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("ARGO_SECURE", "false")
        monkeypatch.setenv("ARGO_TOKEN", "s3cret")
        monkeypatch.setenv("ARGO_NAMESPACE", "kolora")
        code, out, err = run_submit(["-p", "steps=8", "-p", "generate-shards=2"], capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0 and out == "kolora-run-abcde\n" and "argo watch -n kolora kolora-run-abcde" in err
    ((path, headers, body),) = _FakeArgoServer.received
    assert path == "/api/v1/workflows/kolora" and headers["Authorization"] == "Bearer s3cret"
    assert body["workflow"]["spec"] == {
        "workflowTemplateRef": {"name": "kolora-pipeline"},
        "arguments": {"parameters": [{"name": "steps", "value": "8"}, {"name": "generate-shards", "value": "2"}]},
    }
