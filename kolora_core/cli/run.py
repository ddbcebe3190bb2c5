"""`kolora run`: run the rendered pipeline on this machine the way Argo would (the developer loop; clusters use Argo).

Examples:
    kolora run                                   # smoke profile, embedded store (runs/.store/), process engine
    kolora run --profile full -p epochs=2        # any workflow parameter with -p name=value
    kolora run --s3-endpoint http://localhost:9000 --bucket kolora   # any S3; keys from AWS_ACCESS_KEY_ID/...
    kolora run --retry                           # rerun the run that failed last, keeping the steps that succeeded

Exit codes: 0 the run succeeded; 1 a step failed (its log tail on stderr); 2 a user error (one line: a bad
parameter, template or endpoint, a store that fails before the run starts, a run that --retry refuses); 75 the
store failed transiently during the run (a 5xx, throttling, a dropped connection: `kolora run --retry`); 130
Ctrl-C, 143 SIGTERM and 129 SIGHUP (the terminal closed), after the running step was stopped (its whole process
group), what it saved uploaded and the summary written (`stop_signals.py`); `kolora run --retry` goes on from there
(stopped while the store was starting, before the run had a directory: nothing ran, and the last line says so).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from kolora_core.cli.dataset_key import check_dataset_key, check_dataset_key_stored
from kolora_core.cli.notify_url import check_notify_url
from kolora_core.cli.parameter_flag import add_parameter_flag, take_profile
from kolora_core.cli.release_store_params import check_release_store
from kolora_core.cli.stop_signals import Stopped, last_line, stop_signals_raise
from kolora_core.cli.store_args import check_bucket_flag, store_named
from kolora_core.errors import KoloraError
from kolora_core.runner.engines import ENGINES
from kolora_core.runner.local import DEFAULT_TEMPLATE, RunOptions, failure_head, failure_report, run_workflow
from kolora_core.runner.retry import plan_retry
from kolora_core.storage.s3 import DEFAULT_BUCKET, OR_EMBEDDED, S3Settings

DEFAULT_PROFILE = "smoke"
NEWEST_FAILED = ""  # `--retry` without RUN
# the way on, at the end of the last line of a stopped run and of a failed one
GO_ON = "; `kolora run --retry` goes on from what it saved"
RERUN = (  # a retry keeps the run's parameters: a cause in a -p value needs a new run
    "; fix the cause and `kolora run --retry` reruns from the failed step (it keeps the -p values: to change one,"
    " start a new run)"
)
# the options that make a run what it is: a retry takes them from the run's record
RUN_SHAPING = {"--template": "template", "--profile": "profile", "-p": "parameter", "--engine": "engine",
               "--s3-endpoint": "s3_endpoint", "--bucket": "bucket", "--region": "region"}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the pipeline locally the way Argo would",
        description="Execute the rendered WorkflowTemplate on this machine: DAG order, parameters, `when`, "
        "artifacts through S3 under a per-run prefix; outputs and a summary land in runs/<run-id>/.",
    )
    parser.add_argument("--template", type=Path, help=f"rendered workflow YAML (default: {DEFAULT_TEMPLATE})")
    parser.add_argument("--profile", help=f"shorthand for -p profile=NAME (default: {DEFAULT_PROFILE})")
    add_parameter_flag(parser, "set a workflow parameter (repeatable)")
    parser.add_argument("--engine", choices=sorted(ENGINES), help="how each step runs (default: process)")
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="external S3-compatible endpoint (default: the embedded SeaweedFS store in <runs-dir>/.store, started "
        "for the run, kept between runs); credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    )
    parser.add_argument("--bucket", help=f"bucket for artifacts, created if missing (default: {DEFAULT_BUCKET})")
    parser.add_argument("--region", help="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION or us-east-1)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where runs/<run-id>/ goes (default: runs)")
    parser.add_argument("--keep-work", action="store_true", help="keep each step's scratch dir (default: delete on success)")
    parser.add_argument(
        "--collect-max-gb",
        type=size_gb,
        default=2.0,
        help="copy output artifacts up to this size into runs/<id>/; larger ones stay in the store (default: 2)",
    )
    parser.add_argument(
        "--retry",
        nargs="?",
        const=NEWEST_FAILED,
        metavar="RUN",
        help="rerun a failed or interrupted run in place, as `argo retry` does: the steps that succeeded are kept, "
        "the others run again and resume from what they saved (train from its checkpoint); RUN is a run id under "
        "--runs-dir or a run's directory (default: the run that failed last); the run's own template, parameters, "
        "engine and store are used, so none of those options may be given",
    )
    parser.set_defaults(func=_run_command)


def size_gb(value: str) -> float:
    """A size in GB, refused at parse time (exit 2): `nan` was a traceback at `int(nan * 2**30)`, and a negative one
    was taken as a limit below every artifact (nothing collected, a cut-off warning each)."""
    try:
        size = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number: give a size in GB, 0 or more") from None
    if not math.isfinite(size) or size < 0:
        raise argparse.ArgumentTypeError(f"'{value}' is not a size: give a finite number of GB, 0 or more")
    return size


def parse_parameters(items: list[str]) -> dict[str, str]:
    """`name=value` pairs; the value may contain '=' and may be empty."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise KoloraError(f"-p '{item}' is not NAME=VALUE")
        params[name.strip()] = value
    return params


def absolute_local_dataset(params: dict[str, str]) -> None:
    """`-p dataset=PATH` (a folder or .parquet on this machine, no scheme or glob) as the user's shell means it:
    made absolute, and refused before the store starts when nothing is there. Why: every step runs in the repository's
    root, so a relative path typed elsewhere named another folder or none, and failed in ingest, with `kolora run
    --retry` as advice, which cannot change a parameter."""
    source = params.get("dataset", "")
    if not source or "://" in source or any(char in source for char in "*?["):
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise KoloraError(
            f"-p dataset={source}: {path.absolute()} does not exist: give a folder of images or a .parquet file/folder "
            "on this machine (relative to where you run kolora), or a URI such as modelscope://<id>"
        )
    params["dataset"] = str(path.resolve())


def options_from_args(args: argparse.Namespace) -> RunOptions:
    if args.retry is not None:
        return retry_options(args)
    params = parse_parameters(args.parameter)
    check_dataset_key(params)
    absolute_local_dataset(params)
    check_notify_url(params)
    check_release_store(params, args.s3_endpoint, store_named(args.s3_endpoint))
    check_bucket_flag(args)
    soft: dict[str, str] = {}
    take_profile(params, args.profile)
    if args.profile is None:
        soft["profile"] = DEFAULT_PROFILE  # only where the template has a profile parameter
    engine = args.engine or "process"
    soft.update(ENGINES[engine].default_parameters)  # e.g. image-registry=localhost for the container engines
    bucket = args.bucket or DEFAULT_BUCKET
    s3 = None
    if args.s3_endpoint:
        s3 = S3Settings.from_env(args.s3_endpoint, bucket=bucket, region=args.region, unreachable_fix=OR_EMBEDDED)
    return RunOptions(
        template=args.template or DEFAULT_TEMPLATE,
        parameters=params,
        soft_parameters=soft,
        engine=engine,
        s3=s3,
        embedded_bucket=bucket,
        runs_dir=args.runs_dir,
        keep_work=args.keep_work,
        collect_max_bytes=int(args.collect_max_gb * 2**30),
        store_checks=(check_dataset_key_stored,),
    )


def retry_options(args: argparse.Namespace) -> RunOptions:
    """`--retry [RUN]`: the options the run recorded (`runner/retry.py`); what would change the run is refused."""
    given = [flag for flag, value in RUN_SHAPING.items() if getattr(args, value) not in (None, [])]
    if given:
        raise KoloraError(
            f"--retry reruns a run with its own template, parameters, engine and store: leave out {', '.join(given)} "
            "(a new run takes them)"
        )
    plan = plan_retry(args.runs_dir, args.retry or None)
    store = plan.record.store
    s3 = None
    if not store.embedded:
        assert store.endpoint is not None
        s3 = S3Settings.from_env(store.endpoint, bucket=store.bucket, region=store.region, unreachable_fix=OR_EMBEDDED)
    return RunOptions(
        template=Path(plan.record.template),
        parameters=plan.given_parameters(),
        soft_parameters=plan.other_parameters(),
        engine=plan.record.engine,
        s3=s3,
        embedded_bucket=store.bucket,
        store_dir=Path(store.store_dir) if store.store_dir else None,
        runs_dir=plan.run_dir.parent,
        keep_work=args.keep_work,
        collect_max_bytes=int(args.collect_max_gb * 2**30),
        retry=plan,
    )


def newest_run(runs_dir: Path) -> str | None:
    """The run `<runs-dir>/latest` names (the runner points it at a run once its directory exists), or None."""
    try:
        return os.readlink(runs_dir / "latest")
    except OSError:
        return None


def _run_command(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    before = newest_run(options.runs_dir)
    try:
        with stop_signals_raise():
            result = run_workflow(options)
    except (KeyboardInterrupt, Stopped) as stop:
        why, code = ("interrupted", 130) if isinstance(stop, KeyboardInterrupt) else (stop.why, stop.exit_code)
        if options.retry is None and newest_run(options.runs_dir) == before:  # stopped while the store was starting
            last_line(f"kolora run: {why} before the run started; nothing ran: run it again")
        else:
            last_line(f"kolora run: {why}; the running step was stopped{GO_ON}")
        return code
    if result.failed is not None:
        print(failure_report(result), file=sys.stderr)
        print(failure_head(result.failed) + RERUN, file=sys.stderr)  # below the log's tail: the way on, last
        return 1
    return 0
