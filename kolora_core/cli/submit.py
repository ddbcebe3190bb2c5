"""`kolora submit`: start a run of the `kolora-pipeline` WorkflowTemplate from a laptop, via argo-server.

    kubectl -n argo port-forward svc/argo-server 2746:2746 &
    export ARGO_SERVER=localhost:2746 ARGO_TOKEN="$(argo auth token)"   # token: if the server wants one
    kolora submit -p profile=smoke -p steps=8

It creates a Workflow that references the template (as `argo submit --from workflowtemplate/...`),
with one `-p name=value` per changed parameter; the rest keep the template's defaults. The run config
the parameters add up to is validated here first, so a typo fails on the laptop and not on a GPU node.
The argo CLI's environment variables are honoured: ARGO_SERVER (host:port or URL), ARGO_TOKEN,
ARGO_NAMESPACE, ARGO_SECURE=false (plain http), ARGO_INSECURE_SKIP_VERIFY=true.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests
import yaml

from kolora_core.cli.dataset_key import check_dataset_key
from kolora_core.cli.notify_url import check_notify_url
from kolora_core.cli.parameter_flag import add_parameter_flag
from kolora_core.cli.release_store_params import check_release_store
from kolora_core.config import RunConfig, inline_prompts_file_text, load_config, read_config_file, reads_local_files
from kolora_core.config.files import read_text
from kolora_core.config.loader import CONFIG_FORMATS
from kolora_core.errors import KoloraError, closest
from kolora_core.runner.flags import check_generate_shards, refuse_config_path
from kolora_core.runner.local import checked_parameters
from kolora_core.runner.template import parse_workflow
from workflows.options import DATASET_KEY_PARAM, TEMPLATE_NAME, run_parameters
from workflows.options import ONEOFF_GENERATE_NAME as GENERATE_NAME

DEFAULT_NAMESPACE = "argo"
TIMEOUT_S = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit a run of the kolora-pipeline WorkflowTemplate to argo-server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_parameter_flag(parser, "workflow parameter, repeatable")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="run config file (YAML, JSON or TOML), sent as the `config` parameter"
    )
    parser.add_argument("--host", help="argo-server URL or host:port (default: $ARGO_SERVER)")
    parser.add_argument("--token", help="bearer token (default: $ARGO_TOKEN; `argo auth token` prints one)")
    parser.add_argument("-n", "--namespace", help=f"namespace (default: $ARGO_NAMESPACE or {DEFAULT_NAMESPACE})")
    parser.add_argument("--insecure-skip-verify", action="store_true", help="do not verify the server's TLS certificate")
    parser.add_argument("--template", default=TEMPLATE_NAME, help="WorkflowTemplate name (default %(default)s)")
    parser.add_argument("--generate-name", default=GENERATE_NAME, help="name prefix of the run (default %(default)s)")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the local run-config and template parameter checks (cluster runs another version)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the Workflow YAML instead of submitting it")
    parser.set_defaults(func=_submit_command)


def parse_parameters(pairs: list[str], config_file: Path | None) -> dict[str, str]:
    """`-p name=value` pairs (+ --config FILE) -> parameters, checked against the template's names."""
    known = [p.name for p in run_parameters()]
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise KoloraError(f"-p {pair}: expected NAME=VALUE")
        if name not in known:
            close = closest(name, known)
            hint = f"did you mean {close}?" if close else f"choose from {', '.join(known)}"
            raise KoloraError(f"-p {name}: unknown parameter; {hint}")
        params[name] = value
    if "config" in params:  # checked even with --no-validate: a path is never a config
        refuse_config_path("config", params["config"], instead='--config {path} (or -p {name}="$(cat {path})")')
    if config_file is not None:
        if "config" in params:
            raise KoloraError("give the run config either as --config FILE or as -p config=..., not both")
        text = read_text(config_file, "--config", "pass a YAML, JSON or TOML file")  # one line, as `kolora config` has it
        # The pods read it as run.yaml: JSON and TOML travel as the YAML of what they hold.
        converted = config_file.suffix.lower() in CONFIG_FORMATS
        params["config"] = yaml.safe_dump(read_config_file(config_file), allow_unicode=True) if converted else text
    if "config" in params:  # the pods have neither this working directory nor its files: they get the prompts
        params["config"] = inline_prompts_file_text(params["config"])
    return params


def refuse_local_dataset(params: dict[str, str], source: str | None, where: str) -> None:
    """The pods read only the store and the hub: a path on this machine (`source`, named by `where`) is refused
    with how to hand it in instead (`dataset-key`; with one, `source` is not read)."""
    if params.get(DATASET_KEY_PARAM) or not source or not reads_local_files(source):
        return
    path = source.strip().removeprefix("file://").removeprefix("modelscope://")
    folder = path if not path.lower().endswith(".parquet") and "*" not in path else str(Path(path).parent)
    raise KoloraError(
        f"{where} is a path on this machine, which the pods cannot read: upload {'the' if folder == path else 'its'} folder "
        f"into the artifact store with `kolora upload {shlex.quote(folder)} datasets/<name> --s3-endpoint <url> --bucket "
        f"<bucket>` (checked, whole or not at all) and pass -p {DATASET_KEY_PARAM}=datasets/<name>"
    )


def validate(params: dict[str, str], origin: str | None = None) -> RunConfig:
    """Resolve the run config these parameters give, exactly as every stage will; raise KoloraError if invalid.

    `origin` is how the user gave the config (`--config FILE`; default `-p config` where that is set): errors name
    it, not the temporary file the text is checked in."""
    defaults = {p.name: p.default for p in run_parameters()}
    merged = {**defaults, **params}
    overrides: dict[str, Any] = {}
    for p in run_parameters():
        if p.flag and merged[p.name] != "":
            try:
                overrides[p.flag] = yaml.safe_load(merged[p.name])
            except yaml.YAMLError:
                raise KoloraError(f"-p {p.name}: '{merged[p.name]}' is not a valid YAML value") from None
    origin = origin or ("-p config" if "config" in params else None)
    if origin is None:  # the template's default config, "{}": nothing to overlay, nor to name in errors
        return load_config(merged["profile"], None, overrides, flags_name="-p parameters")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(merged["config"], encoding="utf-8")
        return load_config(merged["profile"], config, overrides, config_name=origin, flags_name="-p parameters")


def check_template_parameters(params: dict[str, str], origin: str | None = None) -> None:
    """Raise a one-line KoloraError for a value `kolora run` refuses before a step starts (an enum of the template,
    a value that feeds a stage's config flag such as `generate-shards=0`, more generate shards than story prompts),
    checked against the pipeline this version renders; `origin` as in `validate`. Why: `validate` sees only the run
    config; argo-server or a GPU node would refuse these later, or GPU pods start that render nothing."""
    from workflows import pipeline  # hera: ~0.6 s, paid only by a submit that validates

    template = parse_workflow(pipeline.build().to_dict(), source=f"WorkflowTemplate {TEMPLATE_NAME}")
    check_generate_shards(template, checked_parameters(template, params), origin)


def server_url(host: str | None) -> str:
    host = host or os.environ.get("ARGO_SERVER")
    if not host:
        raise KoloraError(
            "no argo-server: pass --host or set ARGO_SERVER, e.g. `kubectl -n argo port-forward svc/argo-server 2746:2746` "
            "and ARGO_SERVER=localhost:2746"
        )
    if re.match(r"^https?://", host):
        return host.rstrip("/")
    scheme = "http" if os.environ.get("ARGO_SECURE", "true").lower() == "false" else "https"
    return f"{scheme}://{host.rstrip('/')}"


class _TimeoutSession(requests.Session):
    """hera sets no timeout; a blackholed address must not hang the CLI."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT_S)
        return super().request(*args, **kwargs)


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed (self-signed certificate? pass --insecure-skip-verify; plain http? use http://host:port)"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {TIMEOUT_S} s"
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip().lower() if found else type(exc).__name__


def build_workflow(params: dict[str, str], namespace: str, template: str, generate_name: str):
    from hera.workflows import Parameter, Workflow
    from hera.workflows.models import WorkflowTemplateRef

    return Workflow(
        generate_name=generate_name,
        namespace=namespace,
        labels={"app.kubernetes.io/name": "kolora", "kolora.dev/trigger": "kolora-submit"},
        workflow_template_ref=WorkflowTemplateRef(name=template),
        arguments=[Parameter(name=name, value=value) for name, value in params.items()] or None,
    )


def submit(
    params: dict[str, str],
    host: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
    verify_ssl: bool = True,
    template: str = TEMPLATE_NAME,
    generate_name: str = GENERATE_NAME,
) -> str:
    """Create the Workflow on argo-server; return its name. Every failure is a one-line KoloraError."""
    from hera.exceptions import HeraException
    from hera.workflows import WorkflowsService
    from hera.workflows.models import WorkflowCreateRequest

    url = server_url(host)
    namespace = namespace or os.environ.get("ARGO_NAMESPACE") or DEFAULT_NAMESPACE
    token = token or os.environ.get("ARGO_TOKEN") or None
    workflow = build_workflow(params, namespace, template, generate_name)
    service = WorkflowsService(host=url, token=token, namespace=namespace, verify_ssl=verify_ssl, session=_TimeoutSession())
    try:
        created = service.create_workflow(WorkflowCreateRequest(workflow=workflow.build()), namespace=namespace)
    except requests.exceptions.JSONDecodeError:
        raise KoloraError(
            f"{url} answered, but not as argo-server (a proxy, or the wrong port?): check --host / ARGO_SERVER"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise KoloraError(
            f"argo-server at {url} does not answer ({_reason(exc)}): is it port-forwarded / is ARGO_SERVER right?"
        ) from None
    except HeraException as exc:
        status = type(exc).__name__
        hint = ""
        if status in ("Unauthorized", "Forbidden"):
            hint = ": set ARGO_TOKEN (`argo auth token`) or pass --token"
        elif "not found" in str(exc).lower():
            hint = f": create the template first (`argo template create -n {namespace} workflows/dist/kolora-pipeline.yaml`)"
        raise KoloraError(f"argo-server at {url} refused the workflow ({status}: {exc}){hint}") from None
    finally:
        service.close()
    return created.metadata.name


def _submit_command(args: argparse.Namespace) -> int:
    params = parse_parameters(args.parameter, args.config)
    check_dataset_key(params)
    check_notify_url(params)
    check_release_store(params, None, "the template's s3-endpoint")
    given = f"-p dataset={params['dataset']}" if params.get("dataset") else None
    if args.no_validate:
        refuse_local_dataset(params, params.get("dataset"), given or "")
    else:  # the resolved source: -p dataset, else the config's or the profile's
        origin = f"--config {args.config}" if args.config is not None else None
        config = validate(params, origin)
        check_template_parameters(params, origin)
        named = origin or ("-p config" if "config" in params else f"profile {config.profile}")
        refuse_local_dataset(params, config.ingest.source, given or f"ingest.source {config.ingest.source} ({named})")
    if args.dry_run:
        namespace = args.namespace or os.environ.get("ARGO_NAMESPACE") or DEFAULT_NAMESPACE
        print(build_workflow(params, namespace, args.template, args.generate_name).to_yaml(allow_unicode=True), end="")
        return 0
    verify = not (args.insecure_skip_verify or os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "").lower() == "true")
    name = submit(params, args.host, args.token, args.namespace, verify, args.template, args.generate_name)
    namespace = args.namespace or os.environ.get("ARGO_NAMESPACE") or DEFAULT_NAMESPACE
    print(name)
    print(
        f"watch it: argo watch -n {namespace} {name}   (UI: {server_url(args.host)}/workflows/{namespace}/{name})",
        file=sys.stderr,
    )
    return 0
