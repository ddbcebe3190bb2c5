"""Render the Argo objects to YAML: `python -m workflows.render [--out DIR] [--check]`.

Writes the files a user applies into `workflows/dist/`, where they are committed: `kolora-pipeline.yaml`
(WorkflowTemplate), `kolora-run.yaml` (Workflow for `argo submit`), `kolora-nightly.yaml` (CronWorkflow),
`kolora-fetch-models.yaml` (the one-off Workflow that fills the models store of `--models-from s3|pvc`; S3 unless
`--models-from pvc`) and `kolora-rbac.yaml` (the ServiceAccount the workflows run as, with the executor's RBAC).
Other cluster shapes are options, rendered on demand and validated in the tests, not committed: `--no-gpu` (kind,
CPU CI), `--models-from s3|pvc` (docs/argo.md "Model weights"), GPU placement, ServiceAccount, artifact
repository, generate parallelism, archived logs. `--check` renders in memory and exits 1 with a diff when the
committed files are stale. `--out` defaults to `workflows/dist` of the current directory, so only a run from the
repository's root rewrites the committed files (an absolute default rewrote them from anywhere).
`kolora render` is the same command. The Helm chart ships copies of the pipeline and the nightly
(helm/kolora/files/, `make render` refreshes both).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from workflows.options import (
    CONFIG_MAP_KEY,
    DNS_SUBDOMAIN,
    DNS_SUBDOMAIN_MAX,
    MODELS_FROM,
    TOLERATION_EFFECTS,
    RenderOptions,
    Toleration,
)

DIST = Path(__file__).resolve().parent / "dist"  # the committed files
DEFAULT_OUT = Path("workflows", "dist")  # of the current directory: DIST when run from the repository's root
HEADER = "# Rendered by `python -m workflows.render` (or `kolora render`) from workflows/{source}.py; do not edit.\n# {use}\n"
USAGE = {
    "kolora-pipeline.yaml": ("pipeline", "argo template create -n argo kolora-pipeline.yaml   (later: argo template update)"),
    "kolora-run.yaml": ("oneoff", "argo submit -n argo kolora-run.yaml -p profile=smoke --watch"),
    "kolora-nightly.yaml": ("nightly", "argo cron create -n argo kolora-nightly.yaml"),
    "kolora-fetch-models.yaml": (
        "fetch_models",
        "once, fills the models store of a pipeline rendered with --models-from s3|pvc: "
        "argo submit -n argo kolora-fetch-models.yaml --watch",
    ),
    "kolora-rbac.yaml": ("rbac", "first, once per namespace: kubectl apply -n argo -f kolora-rbac.yaml"),
}


def to_yaml(obj: Any) -> str:
    """hera object (or a list of plain Kubernetes objects) -> YAML text; hera's key order, unicode kept, width 130."""
    if isinstance(obj, list):
        import yaml

        return yaml.safe_dump_all(obj, allow_unicode=True, width=130, sort_keys=False)
    return obj.to_yaml(allow_unicode=True, width=130)


def _with_header(filename: str, text: str) -> str:
    source, use = USAGE[filename]
    return HEADER.format(source=source, use=use) + text


def render_all(gpu: bool = True, **overrides: Any) -> dict[str, str]:
    """File name -> YAML text of every object. `overrides` are `RenderOptions` fields.

    `kolora-fetch-models.yaml` fills the store of `models_from` "s3" or "pvc"; with the default "fetch" (every run
    fetches its models) it is the S3 one, for a pipeline rendered with `models_from="s3"`.
    """
    from workflows import fetch_models, nightly, oneoff, pipeline, rbac  # hera imports take ~0.6 s; keep `kolora --help` fast

    options = RenderOptions(gpu=gpu, **overrides)
    store = options if options.models_from != "fetch" else dataclasses.replace(options, models_from="s3")
    files = {
        "kolora-pipeline.yaml": pipeline.build(options),
        "kolora-run.yaml": oneoff.build(options),
        "kolora-nightly.yaml": nightly.build(options),
        "kolora-fetch-models.yaml": fetch_models.build(store),
        "kolora-rbac.yaml": rbac.build(options),
    }
    return {name: _with_header(name, to_yaml(obj)) for name, obj in sorted(files.items())}


def _refuse_non_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise KoloraError(f"--out {out} is a file, not a directory: pass a directory (it is created if missing)")


def write(files: dict[str, str], out: Path) -> list[Path]:
    """Write the files into `out` (created if missing); an `out` that cannot be a directory is a one-line KoloraError.

    Each file is written beside itself and renamed over the old one: stopped mid-write (Ctrl-C, a full disk), a
    file is its old or its new self, never a truncated YAML that `kubectl apply` would take."""
    _refuse_non_directory(out)
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path, partial = out / name, out / f".{name}.partial"
            try:
                partial.write_text(text, encoding="utf-8")
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
            written.append(path)
    except OSError as exc:
        raise KoloraError(f"--out {out}: cannot write {exc.filename} ({exc.strerror}): pass a writable directory") from None
    return written


def stale(files: dict[str, str], out: Path) -> str:
    """Unified diff between the committed files and a fresh render; '' when up to date."""
    _refuse_non_directory(out)
    diffs = []
    for name, text in files.items():
        path = out / name
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old != text:
            diffs += difflib.unified_diff(
                old.splitlines(keepends=True), text.splitlines(keepends=True), f"{path} (committed)", f"{path} (rendered)"
            )
    return "".join(diffs)


def _toleration(spec: str) -> Toleration:
    """KEY[=VALUE][:EFFECT] -> Toleration (Exists without a value, Equal with one; effect NoSchedule)."""
    key_value, _, effect = spec.partition(":")
    key, sep, value = key_value.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"toleration '{spec}': expected KEY[=VALUE][:EFFECT]")
    if effect and effect not in TOLERATION_EFFECTS:  # Kubernetes refuses any other effect, at submit time
        raise argparse.ArgumentTypeError(f"toleration '{spec}': effect '{effect}' is not one of {', '.join(TOLERATION_EFFECTS)}")
    return Toleration(key=key, effect=effect or "NoSchedule", operator="Equal" if sep else "Exists", value=value if sep else None)


def _count(value: str) -> int:
    """A non-negative integer flag, refused at parse time (exit 2) rather than rendered (`nvidia.com/gpu: '-1'`)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an integer") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative: expected 0 or more")
    return number


def _object_name(kind: str, *, empty_ok: bool = False) -> Callable[[str], str]:
    """The type of a flag naming a Kubernetes object of `kind` (a DNS-1123 subdomain; '' too where `empty_ok`),
    refused at parse time. Written verbatim, a bad name rendered and failed on the cluster: a ServiceAccount made
    argo-server refuse every workflow of the template, a claim left every pod Pending, and the optional hub Secret
    was silently never found (no ModelScope token)."""

    def checked(name: str) -> str:
        if (name or not empty_ok) and not (DNS_SUBDOMAIN.fullmatch(name) and len(name) <= DNS_SUBDOMAIN_MAX):
            raise argparse.ArgumentTypeError(
                f"'{name}' is not a {kind} name: lowercase letters, digits, '-' and '.', starting and ending "
                f"with a letter or digit (at most {DNS_SUBDOMAIN_MAX})"
            )
        return name

    return checked


def _config_map_key(key: str) -> str:
    """The type of --artifact-repository-key, a data key of the repositories' ConfigMap, refused at parse time: written
    verbatim, a key no ConfigMap can hold rendered and every workflow of the template failed on the cluster (its
    artifact repository not found)."""
    if not (CONFIG_MAP_KEY.fullmatch(key) and len(key) <= DNS_SUBDOMAIN_MAX):
        raise argparse.ArgumentTypeError(
            f"'{key}' is not a ConfigMap key: letters, digits, '-', '_' and '.', not '.' or '..' nor starting with '..' "
            f"(at most {DNS_SUBDOMAIN_MAX})"
        )
    return key


def _label(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"node selector '{spec}': expected KEY=VALUE")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The render options, shared by `python -m workflows.render` and `kolora render`."""
    defaults = RenderOptions()
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default {DEFAULT_OUT} of the current directory: the committed files in the repository)",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when --out is stale")
    parser.add_argument(
        "--gpu", action=argparse.BooleanOptionalAction, default=True, help="--no-gpu: no GPU requests anywhere (kind, CPU CI)"
    )
    parser.add_argument(
        "--gpus",
        type=_count,
        default=defaults.gpus,
        help="nvidia.com/gpu per GPU step (default %(default)s); 0 = --no-gpu (no GPU toleration or nodeSelector either)",
    )
    parser.add_argument(
        "--gpu-toleration",
        dest="tolerations",
        action="append",
        type=_toleration,
        metavar="KEY[=VALUE][:EFFECT]",
        help="toleration of GPU steps, repeatable; replaces the default nvidia.com/gpu:NoSchedule (Exists)",
    )
    parser.add_argument(
        "--gpu-node-selector",
        dest="node_selector",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="nodeSelector of GPU steps, repeatable; replaces the default nvidia.com/gpu.present=true",
    )
    parser.add_argument("--no-gpu-node-selector", action="store_true", help="GPU steps get no nodeSelector")
    parser.add_argument(
        "--artifact-repository-key",
        type=_config_map_key,
        help="artifact repository key in --artifact-repository-configmap (default: the namespace's default)",
    )
    parser.add_argument(
        "--artifact-repository-configmap",
        type=_object_name("ConfigMap"),
        default=defaults.artifact_repository_configmap,
        help="%(default)s",
    )
    parser.add_argument(
        "--service-account",
        type=_object_name("ServiceAccount", empty_ok=True),
        default=defaults.service_account,
        help="ServiceAccount of the workflow pods and their executor (default %(default)s; '' = the namespace's default)",
    )
    parser.add_argument(
        "--hub-secret",
        type=_object_name("Secret"),
        default=defaults.hub_secret,
        help="Secret holding the optional ModelScope token",
    )
    parser.add_argument(
        "--models-from",
        choices=MODELS_FROM,
        default=defaults.models_from,
        help="base model weights: fetch (a fetch-models step per run, default), s3 (the models-key artifact) or pvc",
    )
    parser.add_argument(
        "--models-pvc",
        type=_object_name("PersistentVolumeClaim"),
        default=defaults.models_pvc,
        help="claim of --models-from pvc (default %(default)s)",
    )
    parser.add_argument(
        "--generate-parallelism",
        type=_count,
        default=defaults.generate_parallelism,
        help="at most this many generate shards (pods of the DAG) at once; 0 = no bound (default %(default)s)",
    )
    parser.add_argument("--archive-logs", action="store_true", help="keep every step's log in the artifact repository")
    parser.add_argument(
        "--compile-cache",
        action=argparse.BooleanOptionalAction,
        default=defaults.compile_cache,
        help="with --models-from s3|pvc keep torch.compile's cache beside the models (pvc: needs a claim train and "
        "generate may write, ReadWriteMany); --no-compile-cache keeps a read-only claim read-only",
    )


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `render_all` from parsed `add_arguments` flags."""
    kwargs: dict[str, Any] = {
        "gpu": args.gpu,
        "gpus": args.gpus,
        "artifact_repository_key": args.artifact_repository_key,
        "artifact_repository_configmap": args.artifact_repository_configmap,
        "service_account": args.service_account or None,
        "hub_secret": args.hub_secret,
        "models_from": args.models_from,
        "models_pvc": args.models_pvc,
        "generate_parallelism": args.generate_parallelism or None,
        "archive_logs": args.archive_logs,
        "compile_cache": args.compile_cache,
    }
    if args.tolerations:
        kwargs["tolerations"] = tuple(args.tolerations)
    if args.no_gpu_node_selector:
        kwargs["node_selector"] = ()
    elif args.node_selector:
        kwargs["node_selector"] = tuple(args.node_selector)
    return kwargs


def _default_options() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from_args(parser.parse_args([]))


def stale_advice(out: Path, options: dict[str, Any]) -> str:
    """What to do about a stale `out`: only the committed directory with the default options is committed again."""
    if out.resolve() != DIST.resolve():
        return "rerun this command without --check to rewrite it"
    if options != _default_options():
        return "it holds the render of the default options, not of these: check them against another --out DIR"
    return "run `python -m workflows.render` and commit the result"


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    files = render_all(**options)
    if args.check:
        diff = stale(files, args.out)
        if diff:
            sys.stdout.write(diff)
            print(f"{args.out} is stale: {stale_advice(args.out, options)}", file=sys.stderr)
            return 1
        print(f"{args.out}: {len(files)} files up to date")
        return 0
    for path in write(files, args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflows.render", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KoloraError as exc:  # as `kolora render` reports it (kolora_core.cli)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
