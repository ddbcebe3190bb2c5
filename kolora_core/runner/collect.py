"""After a run: every output artifact copied from the store to `runs/<run-id>/<node>/<artifact>/`, then flattened.

The workflow annotation `kolora.dev/summary-artifacts` (`task/artifact,...`) names the outputs whose files
are also copied straight into `runs/<run-id>/` (the report, the LoRA), so what a developer opens is one
level down. Artifacts above `--collect-max-gb` stay in the store (a full run's models are ~18 GB).
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from kolora_core.runner.context import RunContext
from kolora_core.stages import COMPLETE_MARKER

SUMMARY_ANNOTATION = "kolora.dev/summary-artifacts"


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
    if ctx.uploaded:
        ctx.store.delete_prefix(f"{ctx.run_id}/")
        for key in ctx.uploaded:
            if not key.startswith(f"{ctx.run_id}/"):
                ctx.store.delete_prefix(key)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
