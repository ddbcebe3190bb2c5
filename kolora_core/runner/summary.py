"""The one-screen summary of a local run: what ran, what it decided, where the outputs are.

Written to `runs/<run-id>/summary.txt` and printed, so the last thing a developer sees answers "did it
work, and what do I open": step phases and durations, output parameters (the promotion gate), what ingest skipped
(when it skipped anything), the filter's counts, the report's headline numbers and the paths of the grid, the report
and the LoRA weights.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from kolora_core.runner.records import NodeRecord, RunResult

MAX_FANOUT_LINES = 4
MAX_VALUE = 70
REPORT_NAMES = ("report.json", "report.html", "report.md", "report.txt")
INGEST_REPORT = "ingest_report.json"  # kolora_core.data.layout's name, not imported: `kolora run` loads no Pillow
INGEST_COUNTS = ("images_read", "kept", "skipped", "problems")
PUBLISHED = re.compile(r"^(?:kolora \w+: )?((?:already )?published s3://\S+.*)$", re.MULTILINE)


def build_summary(result: RunResult) -> str:
    lines = [
        f"kolora run {result.run_id}: {result.status} in {_duration(result.duration)}{_retry_note(result)}",
        f"  template {_show(result.template)}  engine {result.engine}  store {result.store}",
    ]
    if result.parameters:
        changed = " ".join(f"{k}={result.parameters[k]}" for k in result.changed) or "template defaults"
        lines.append("  parameters " + _clip(changed, 110))
    lines.append("steps")
    lines += _step_lines(result.nodes)
    # what a step that publishes (promote: `kolora publish`) said it did, from its own output
    promoted = [m.group(1) for n in result.nodes if n.phase == "Succeeded" for m in PUBLISHED.finditer(n.result or "")]
    lines += [f"promoted {_clip(m, 110)}" for m in promoted]
    params = [(n, k, v) for n in result.nodes for k, v in n.parameters.items() if n.phase in ("Succeeded", "Skipped", "Omitted")]
    if params:
        lines.append("outputs")
        lines += [f"  {n.node}.{k} = {_clip(v, MAX_VALUE)}" for n, k, v in params[:8]]
        if len(params) > 8:
            lines.append(f"  ... {len(params) - 8} more in the step records")
    lines += _report_lines(result)
    files = _files(result.run_dir, result.flattened)
    if files:
        lines.append("files")
        lines += [f"  {_show(p)}" for p in files]
    lines.append(f"logs  {_show(result.run_dir / 'logs')}/")
    if result.failed is not None:
        lines.append(f"FAILED at step {result.failed.node}: {_clip(result.failed.message, 100)}")
    if result.error:
        lines.append(f"ERROR {_clip(result.error, 120)}")
    lines += [f"warning: {_clip(w, 110)}" for w in result.warnings[:3]]
    return "\n".join(lines) + "\n"


def write_summary(result: RunResult) -> str:
    result.summary = build_summary(result)
    (result.run_dir / "summary.txt").write_text(result.summary, encoding="utf-8")
    return result.summary


def _retry_note(result: RunResult) -> str:
    """A retry's own time leaves out the steps it kept and what the earlier attempts spent on the steps it reran:
    the header says the whole run's time too, from the record's durations (a kept step's is its earlier one)."""
    if not result.retries:
        return ""
    earlier = sum(n.duration for n in result.nodes if n.reused) + sum(n.before for n in result.nodes)
    whose = "the first attempt's" if result.retries == 1 else "the earlier attempts'"
    return f" (retry {result.retries}; {_duration(result.duration + earlier)} with {whose} steps)"


def _step_lines(nodes: list[NodeRecord]) -> list[str]:
    by_task: dict[str, list[NodeRecord]] = {}
    for node in nodes:
        by_task.setdefault(node.task, []).append(node)
    width = max((len(n.display) for n in nodes), default=10)
    width = min(max(width, 10), 36)
    lines = []
    for task, group in by_task.items():
        if len(group) > MAX_FANOUT_LINES:
            counts = Counter(n.phase for n in group)
            phases = ", ".join(f"{c} {p}" for p, c in counts.items())
            total = sum(n.duration for n in group)
            lines.append(f"  {f'{task} x{len(group)}':<{width}}  {phases}  {_duration(total)}")
            continue
        for node in group:
            notes = []
            if (node.phase in ("Skipped", "Omitted", "Failed") or node.reused) and node.message:
                notes.append(_clip(node.message, 60))
            if node.before and not node.reused:  # a step run again: what its attempts before this retry took
                notes.append(f"+{_duration(node.before)} before the retry")
            note = f"  ({'; '.join(notes)})" if notes else ""
            timing = _duration(node.duration) if node.phase in ("Succeeded", "Failed") else ""
            lines.append(f"  {_clip(node.display, width):<{width}}  {node.phase:<9}  {timing:>7}{note}".rstrip())
    return lines


def _report_lines(result: RunResult) -> list[str]:
    run_dir, flattened = result.run_dir, result.flattened
    filter_report = _find(run_dir, "filter_report.json", flattened)
    data = _load_json(filter_report) if filter_report else None
    lines = _ingest_lines(*_ingest_record(result, filter_report, data))
    if isinstance(data, dict):
        counts = [f"{k} {data[k]}" for k in ("images_in", "kept", "dropped") if k in data]
        if counts:
            lines.append("filter  " + "  ".join(counts))
    report = _find(run_dir, "report.json", flattened)
    data = _load_json(report) if report else None
    if isinstance(data, dict):
        head = data.get("headline") if isinstance(data.get("headline"), dict) else data
        fields = [f"{k}={v}" for k, v in ((k, _headline(v)) for k, v in head.items()) if v is not None][:8]
        if fields:
            lines.append("report  " + _clip(" ".join(fields), 110))
    return lines


def _ingest_record(result: RunResult, filter_report: Path | None, filter_data: Any) -> tuple[Path | None, Any]:
    """Where ingest's record is and what it holds: its own ingest_report.json in the dataset artifact collected to
    runs/<id>/<node>/<artifact>/; else (a dataset over --collect-max-gb stays in the store) the copy the filter report
    keeps under `ingest`; else (None, None)."""
    for node in result.nodes:
        for name in node.artifacts:
            path = result.run_dir / node.node / name / INGEST_REPORT
            if path.is_file():
                return path, _load_json(path)
    if filter_report is not None and isinstance(filter_data, dict) and "ingest" in filter_data:
        return filter_report, filter_data["ingest"]
    return None, None


def _ingest_lines(path: Path | None, record: Any) -> list[str]:
    """Ingest's counts and where its list of skips is, only when it skipped an image or left a file unused: a user
    who reads only the summary must not take every image for used. The record is untrusted (a file on disk): one
    that is not what ingest writes gets one note, never an exception."""
    if path is None:
        return []
    counts = {k: record.get(k) for k in INGEST_COUNTS} if isinstance(record, dict) else {}
    if not counts or not all(_is_count(v) for v in counts.values()):
        return [f"ingest  {_show(path)} holds no ingest counts: what ingest skipped is not shown"]
    if not counts["skipped"] and not counts["problems"]:
        return []
    kinds = record.get("skipped_by_kind")
    kinds = Counter({str(k): n for k, n in kinds.items() if _is_count(n)} if isinstance(kinds, dict) else {})
    why = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    head = f"ingest  images_read {counts['images_read']}  kept {counts['kept']}  skipped {counts['skipped']}"
    head += f"  other files not used {counts['problems']}" if counts["problems"] else ""
    head += f"  ({_clip(why, max(120 - len(head), 30))})" if why else ""
    return [head, f"  skipped inputs and why: {_show(path)}"]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _files(run_dir: Path, flattened: bool) -> list[Path]:
    found: list[Path] = []
    for name in ("grid.png", *REPORT_NAMES):
        path = _find(run_dir, name, flattened)
        if path is not None:
            found.append(path)
    # flattened weights (the LoRA) first, then (for a workflow that flattens nothing) the shallowest others
    weights = sorted((p for p in _walk(run_dir) if p.suffix == ".safetensors"), key=lambda p: (len(p.parts), str(p)))
    flat = {p.name for p in weights if p.parent == run_dir}
    weights = [p for p in weights if p.parent == run_dir or (not flattened and p.name not in flat)]
    found += weights[:3]
    return found


def _find(run_dir: Path, name: str, flattened: bool) -> Path | None:
    """`run_dir/name` (flattened summary artifacts), else, for a workflow that names none, the first match anywhere.

    A workflow that names its summary artifacts gets only those: an unchanged nightly must not show the champion's
    report.json (its `champion` output holds one) as if evaluate had run.
    """
    if (run_dir / name).is_file():
        return run_dir / name
    if flattened:
        return None
    return next((p for p in sorted(_walk(run_dir)) if p.name == name), None)


def _walk(run_dir: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "logs"]
        out += [Path(root) / f for f in files]
    return out


def _load_json(path: Path) -> Any:
    """The file's JSON, or None: a step's output is untrusted, and the summary must be written whatever it holds."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        return None


def _headline(value: Any) -> str | None:
    """A report field in a few characters: scalars as they are, {result: ...} by its result, lists by length."""
    if isinstance(value, dict):
        inner = next((value[k] for k in ("result", "value", "status") if k in value), None)
        return _scalar(inner) if isinstance(inner, str | int | float | bool) else None
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, str | int | float | bool):
        return _scalar(value)
    return None


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _clip(str(value), 30)


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
