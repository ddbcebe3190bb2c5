"""Production habits of kolora-pipeline: train mutex, generate parallelism, metrics, the exit handler, pod hardening, RBAC."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from kolora_core.cli import notify
from kolora_core.runner.expressions import evaluate_when
from kolora_core.stages import STAGES
from tests.workflows.argo_objects import tasks, templates
from workflows import pods
from workflows.render import render_all
from workflows.steps import STEPS

REPO = Path(__file__).resolve().parents[2]
METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Argo: Prometheus' legacy name rule (workflow/metrics/util.go)


# --- concurrency -----------------------------------------------------------------------------------------------


def test_train_holds_a_mutex_per_model_name(template: dict) -> None:
    assert templates(template)["train"]["synchronization"] == {"mutexes": [{"name": "kolora-train-{{workflow.parameters.name}}"}]}
    assert "synchronization" not in template["spec"]  # only training is exclusive; a second run waits at train
    assert [n for n, t in templates(template).items() if "synchronization" in t] == ["train"]


def _ancestors(deps: dict[str, set[str]], name: str) -> set[str]:
    found: set[str] = set()
    todo = list(deps[name])
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo += deps[n]
    return found


def test_dag_parallelism_bounds_the_generate_shards_alone(template: dict) -> None:
    """The bound is the DAG's `parallelism`: while generate runs, no other task of the DAG can (each is its
    ancestor or its descendant), so the bound counts generate shards only."""
    dag = templates(template)["pipeline"]
    assert dag["parallelism"] == 4
    deps = {n: {d.split(".")[0] for d in (t.get("depends") or "").split(" && ") if d} for n, t in tasks(template).items()}
    before = _ancestors(deps, "generate")
    after = {n for n in deps if "generate" in _ancestors(deps, n)}
    assert set(deps) == before | after | {"generate"}
    unbounded = yaml.safe_load(render_all(generate_parallelism=None)["kolora-pipeline.yaml"])
    assert "parallelism" not in templates(unbounded)["pipeline"]
    with pytest.raises(ValueError, match="generate_parallelism"):
        render_all(generate_parallelism=0)


# --- metrics -----------------------------------------------------------------------------------------------------


def _metrics(template: dict) -> dict[str, dict]:
    found = {m["name"]: m for m in template["spec"]["metrics"]["prometheus"]}
    for name, tmpl in templates(template).items():
        for metric in tmpl.get("metrics", {}).get("prometheus", []):
            found[metric["name"]] = {**metric, "template": name}
    return found


def test_metrics_duration_gate_and_mean_aesthetic(template: dict) -> None:
    metrics = _metrics(template)
    assert set(metrics) == {"kolora_run_duration_seconds", "kolora_gate", "kolora_mean_aesthetic"}
    for name, metric in metrics.items():
        assert METRIC_NAME.match(name) and metric["help"], name
        assert all(METRIC_NAME.match(label["key"]) for label in metric["labels"]), name
    assert metrics["kolora_run_duration_seconds"]["gauge"] == {"value": "{{workflow.duration}}", "realtime": False}
    assert metrics["kolora_gate"]["template"] == metrics["kolora_mean_aesthetic"]["template"] == "evaluate"
    assert metrics["kolora_gate"]["counter"] == {"value": "1"}
    assert {label["key"]: label["value"] for label in metrics["kolora_gate"]["labels"]}["gate"] == "{{outputs.parameters.gate}}"
    assert metrics["kolora_mean_aesthetic"]["gauge"]["value"] == "{{outputs.parameters.mean-aesthetic}}"
    when = metrics["kolora_mean_aesthetic"]["when"]
    for status, gate, emitted in (("Succeeded", "passed", True), ("Succeeded", "skipped", False), ("Failed", "failed", False)):
        text = when.replace("{{status}}", status).replace("{{outputs.parameters.gate}}", gate)
        assert evaluate_when(text, "metric") is emitted, (status, gate)


# --- the exit handler ------------------------------------------------------------------------------------------


def test_notify_is_the_exit_handler_and_off_by_default(template: dict) -> None:
    assert template["spec"]["onExit"] == "notify"
    args = templates(template)["notify"]["container"]["args"]
    given = dict(zip(args[::2], args[1::2], strict=True))
    assert given["--url"] == "{{workflow.parameters.notify-url}}" and given["--status"] == "{{workflow.status}}"
    assert given["--gate"] == "{{workflow.outputs.parameters.gate}}"
    assert given["--mean-aesthetic"] == "{{workflow.outputs.parameters.mean-aesthetic}}"
    assert given["--training"] == "{{workflow.outputs.parameters.training}}"
    assert {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}["notify-url"] == ""
    assert templates(template)["notify"]["retryStrategy"]["retryPolicy"] == "OnError"
    parser = notify.argparse.ArgumentParser()
    notify.register(parser.add_subparsers())
    # the rendered arguments are the CLI's, as Argo resolves them: the parameters and the status always, the step
    # outputs not when their step did not run (an unchanged night has no gate)
    resolved = {"{{workflow.status}}": "Succeeded", "{{workflow.parameters.on-unchanged}}": "skip"}
    args = [resolved.get(a, a) for a in args]
    parsed = parser.parse_args(["notify", *args])
    assert (parsed.training, parsed.gate, parsed.mean_aesthetic) == (None, None, None)


class _Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status: ClassVar[int] = 204

    def do_POST(self) -> None:
        _Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(_Webhook.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received.clear()
    _Webhook.status = 204
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _notify(*argv: str) -> int:
    from kolora_core.cli import main

    return main(["notify", *argv])


@pytest.mark.parametrize(
    ("argv", "outcome", "gate", "mean"),
    [
        (["--status", "Succeeded", "--gate", "passed", "--mean-aesthetic", "6.5"], "promoted", "passed", 6.5),
        (["--status", "Succeeded", "--gate", "failed", "--mean-aesthetic", "4"], "not-promoted", "failed", 4.0),
        (  # the nightly on an unchanged night: evaluate never ran, Argo leaves its globals unresolved
            ["--status", "Succeeded", "--training", "unchanged", "--on-unchanged", "skip", "--gate",
             "{{workflow.outputs.parameters.gate}}", "--mean-aesthetic", "{{workflow.outputs.parameters.mean-aesthetic}}"],
            "unchanged", None, None,
        ),
        (["--status", "Failed", "--training", "{{workflow.outputs.parameters.training}}"], "failed", None, None),
        (["--status", "Error", "--training", "", "--gate", "", "--mean-aesthetic", ""], "failed", None, None),
        (
            ["--status", "Succeeded", "--training", "changed", "--gate", "skipped", "--mean-aesthetic", ""],
            "not-promoted", "skipped", None,
        ),
    ],
)  # fmt: skip
def test_notify_posts_the_outcome(webhook: str, argv: list[str], outcome: str, gate: str | None, mean: float | None) -> None:
    assert _notify("--url", webhook, "--workflow", "kolora-run-x", *argv) == 0
    (body,) = _Webhook.received
    assert body["workflow"] == "kolora-run-x" and body["outcome"] == outcome
    assert body["gate"] == gate and body["mean_aesthetic"] == mean


def test_notify_without_url_sends_nothing_and_a_dead_webhook_never_fails_the_run(
    webhook: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _notify("--url", "", "--status", "Succeeded") == 0
    assert _Webhook.received == [] and "nothing sent" in capsys.readouterr().out
    monkeypatch.setattr(notify.time, "sleep", lambda s: None)
    _Webhook.status = 500
    assert _notify("--url", webhook, "--status", "Succeeded", "--gate", "passed") == 0
    assert len(_Webhook.received) == notify.ATTEMPTS
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "the run is not affected" in err and webhook not in err  # the URL may hold a token


@pytest.mark.parametrize("url", ["hooks.example.com/kolora?token=s3cret", "notaurl", "ftp://h/s3cret", "https:///s3cret"])
def test_notify_to_a_url_it_cannot_post_to_warns_and_never_fails_the_run(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _notify("--url", url, "--status", "Succeeded", "--gate", "passed") == 0
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("kolora notify: warning: --url is not a webhook URL (it ") and "the run is not affected" in err
    assert "s3cret" not in err  # the URL may hold a token


def test_post_reports_what_urllib_refuses_instead_of_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence behind the URL check: a URL urllib refuses, a reply that is not HTTP."""
    monkeypatch.setattr(notify.time, "sleep", lambda s: None)
    assert notify.post("notaurl", {}, attempts=1) == "ValueError"
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_answer_not_http, args=(server,), daemon=True).start()
    with server:
        assert notify.post(f"http://127.0.0.1:{server.getsockname()[1]}/hook", {}, attempts=1) == "BadStatusLine"


def _answer_not_http(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(65536)
        connection.sendall(b"hello, this is not HTTP\r\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["--status", "Whatever"],
        ["--status", "{{workflow.status}}"],
        ["--status", "Succeeded", "--gate", "maybe"],
        ["--status", "Succeeded", "--training", "yes"],
        ["--status", "Succeeded", "--on-unchanged", "later"],
        ["--status", "Succeeded", "--mean-aesthetic", "abc"],
    ],
)
def test_notify_refuses_arguments_the_workflow_never_passes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _notify("--url", "", *argv)
    assert exited.value.code == 2
    assert f"argument {argv[-2]}: " in capsys.readouterr().err


# --- pods --------------------------------------------------------------------------------------------------------


def _dockerfile_env() -> dict[str, str]:
    text = (REPO / "images" / "Dockerfile").read_text(encoding="utf-8")
    block = re.search(r"^FROM \S+ AS base\nENV (.*?)\nRUN", text, re.M | re.S)[1]
    return dict(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))


def test_root_filesystem_is_read_only_and_what_is_written_has_an_emptydir(template: dict) -> None:
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert {n: volumes[n] for n in pods.WRITABLE} == {n: {"name": n, "emptyDir": {}} for n in pods.WRITABLE}
    writable = set(pods.WRITABLE.values())
    assert writable == {"/kolora", "/tmp", pods.HOME_DIR}
    env = _dockerfile_env()
    assert env["HOME"] == pods.HOME_DIR, "the images' HOME is the home emptyDir"
    for var in ("XDG_CACHE_HOME", "HF_HOME", "MODELSCOPE_CACHE", "TORCH_HOME"):  # the caches the images point under /kolora
        assert any(env[var] == w or env[var].startswith(w + "/") for w in writable), var
    # torch.compile (inductor: /tmp/torchinductor_<user>) and Triton (~/.triton) keep their defaults: /tmp and HOME
    assert "TORCHINDUCTOR_CACHE_DIR" not in env and "TRITON_CACHE_DIR" not in env
    for name in [*STAGES, *STEPS]:
        container = templates(template)[name]["container"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {mounts.get(path) for path in pods.WRITABLE.values()} == set(pods.WRITABLE), name


def test_step_containers_get_no_service_account_token(template: dict) -> None:
    spec = template["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == spec["executor"]["serviceAccountName"] == "kolora-workflow"
    assert not [n for n, t in templates(template).items() if "automountServiceAccountToken" in t or "serviceAccountName" in t]


def test_rbac_manifest_is_what_the_executor_needs(rbac: list[dict], template: dict) -> None:
    from tests.helm.chart import validate_core

    kinds = {d["kind"]: d for d in rbac}
    assert sorted(kinds) == ["Role", "RoleBinding", "Secret", "ServiceAccount"]
    sa = template["spec"]["serviceAccountName"]
    assert kinds["ServiceAccount"]["metadata"]["name"] == sa and kinds["ServiceAccount"]["automountServiceAccountToken"] is False
    # Argo mounts the executor's token from the Secret this annotation names (util/secrets TokenNameForServiceAccount)
    token = kinds["ServiceAccount"]["metadata"]["annotations"]["workflows.argoproj.io/service-account-token.name"]
    assert kinds["Secret"]["metadata"]["name"] == token
    assert kinds["Secret"]["type"] == "kubernetes.io/service-account-token"
    assert kinds["Secret"]["metadata"]["annotations"] == {"kubernetes.io/service-account.name": sa}
    assert kinds["Role"]["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": sa}]
    assert kinds["RoleBinding"]["roleRef"]["name"] == kinds["Role"]["metadata"]["name"]
    for obj in rbac:
        assert validate_core(obj) == [], obj["kind"]


def test_archive_logs_is_a_render_option(template: dict) -> None:
    assert "archiveLogs" not in template["spec"]
    assert yaml.safe_load(render_all(archive_logs=True)["kolora-pipeline.yaml"])["spec"]["archiveLogs"] is True
