"""After a run: every output artifact copied from the store to `runs/<run-id>/<node>/<artifact>/`, then flattened.

The workflow annotation `kolora.dev/summary-artifacts` (`task/artifact,...`) names the outputs whose files
are also copied straight into `runs/<run-id>/` (the report, the LoRA), so what a developer opens is one
level down. Artifacts above `--collect-max-gb` stay in the store (a full run's models are ~18 GB). In the embedded
store a run's artifacts are deleted after it succeeded (`forget_uploads`), and once nothing can retry it
(`drop_abandoned`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath

from kolora_core.runner.context import RunContext
from kolora_core.runner.run_record import retryable_record
from kolora_core.stages import COMPLETE_MARKER
from kolora_core.storage.s3 import S3Store

SUMMARY_ANNOTATION = "kolora.dev/summary-artifacts"
RUN_ID = re.compile(r"^[a-z0-9][a-z0-9.-]*-\d{8}-\d{6}-[0-9a-f]{4}$")  # local.new_run_id's shape


def collect(ctx: RunContext) -> None:
    """Copy every output artifact to runs/<id>/<node>/<artifact>/, then flatten the summary artifacts."""
    result = ctx.result
    for node in result.nodes:
        for name, ref in node.artifacts.items():
            size = ctx.store.size(ref.key)
            if size > ctx.collect_max_bytes:
                result.warnings.append(
                    f"{node.node}/{name} ({size / 2**30:.1f} GiB) left in the store at s3://{ctx.store.bucket}/{ref.key}: "
                    "larger than --collect-max-gb"
                )
                continue
            dest = ctx.run_dir / node.node / name
            tmp = ctx.run_dir / node.node / f".{name}.collect"
            for stale in (dest, tmp):
                remove(stale)
            kind = ctx.store.download(ref.key, tmp)
            if kind == "dir":
                tmp.rename(dest)
            else:
                dest.mkdir(parents=True)
                tmp.rename(dest / (PurePosixPath(ref.path).name or name))
    _flatten(ctx)


def _flatten(ctx: RunContext) -> None:
    result = ctx.result
    spec = ctx.workflow.annotations.get(SUMMARY_ANNOTATION, "")
    result.flattened = bool(spec.strip())
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        task, _, artifact = entry.partition("/")
        matches = [n for n in result.nodes if n.task == task and artifact in n.artifacts]
        if not matches:
            if result.ok and not any(n.task == task and n.phase in ("Skipped", "Omitted") for n in result.nodes):
                result.warnings.append(f"{SUMMARY_ANNOTATION}: '{entry}' was not produced by this run")
            continue
        for node in matches:
            src = ctx.run_dir / node.node / artifact
            for item in sorted(src.iterdir()):
                if item.name == COMPLETE_MARKER:
                    continue
                target = ctx.run_dir / item.name
                if target.exists():
                    remove(target)
                if item.is_dir():
                    shutil.copytree(item, target)
                else:
                    shutil.copy2(item, target)


def forget_uploads(ctx: RunContext) -> None:
    """Keep the embedded store to what outlives a run (releases): the run's artifacts are in runs/<id>/ now."""
    if ctx.uploaded or ctx.earlier:  # a retry's prefix holds the earlier invocations' artifacts too
        ctx.store.delete_prefix(f"{ctx.run_id}/")
        for key in ctx.uploaded:
            if not key.startswith(f"{ctx.run_id}/"):
                ctx.store.delete_prefix(key)


def drop_abandoned(store: S3Store, runs_dir: Path) -> list[str]:
    """Delete from the embedded store the artifacts of runs nothing can retry any more; returns their ids.

    Why: a failed or interrupted run keeps its artifacts in the store (`kolora run --retry` reuses them, and finds
    what the stopped step saved), a full run's models alone being ~18 GB. They go when the run's directory is
    deleted, or holds no record a retry could use (a run of an older kolora; a record saying it succeeded, whose
    cleanup was cut short). Only top-level prefixes shaped like run ids are looked at: releases, `kolora upload`s
    and anything else in the store are not runs' and are left alone."""
    prefixes = {key.split("/", 1)[0] for key in store.list_keys("") if "/" in key}
    dropped = [p for p in sorted(prefixes) if RUN_ID.match(p) and retryable_record(runs_dir / p) is None]
    for run_id in dropped:
        store.delete_prefix(f"{run_id}/")
    return dropped


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
