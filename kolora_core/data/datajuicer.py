"""Run a Data-Juicer recipe on verified images and read back what it kept and why it dropped the rest.

Data-Juicer runs through its Python API (`get_init_configs(cfg, load_configs_only=False)` +
`DefaultExecutor(cfg).run()`) in a child process (`python -m kolora_core.data.datajuicer cfg.json`), because
importing and running it changes process-wide state: it turns on Pillow's truncated-image loading, redirects
sys.stdout/stderr into its logger and keeps log sinks open on its work dir. The child's output is read as it
comes (its progress surfaced as log lines, `_DJProgress`) and kept in a log file, `datajuicer.log` of the filter
report; on failure the stage error quotes the cause (the child prints it on one marked line: Data-Juicer's own
messages span lines, e.g. a parameter of the wrong type under "errors detected:"); only a failure
without that line repeats the log's last lines as ERROR lines, since with it they are a traceback burying the cause.

Checks around it:

* before anything is imported, ray and torch must be importable: when they are not, Data-Juicer tries to
  pip-install them at run time (and loops when offline). The child re-checks by importing them first.
* Data-Juicer logs op errors and still exits 0 (one unreadable image empties its whole batch), so the
  caller compares the output count with the input and explains every drop from the tracer's per-op
  `sample_trace-<op>.jsonl` files (the dropped samples with their `__dj__stats__`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.progress import EVERY_S

log = logging.getLogger("kolora.filter")
REQUIRED_MODULES = ("ray", "torch", "aiohttp", "data_juicer")
# extra modules of optional ops: missing -> Data-Juicer's LazyLoader pip-installs them mid-run
OP_MODULES = {
    "image_aesthetics_filter": ("transformers", "aesthetics_predictor"),
    "image_text_similarity_filter": ("transformers",),
    "image_nsfw_filter": ("transformers",),
    "image_watermark_filter": ("transformers",),
    "image_deduplicator": ("imagededup",),
}
PIP_NAMES = {"data_juicer": "py-data-juicer", "aesthetics_predictor": "simple-aesthetics-predictor"}
STATS_KEY = "__dj__stats__"
IMAGE_TOKEN = "<__dj__image>"
EOC_TOKEN = "<|__dj__eoc|>"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
CAUSE_MARKER = "KOLORA_DJ_CAUSE: "  # the child's one-line cause of a failure, read back by the parent


@dataclass(frozen=True)
class Sample:
    id: str
    text: str
    image: Path  # absolute: Data-Juicer opens it


@dataclass(frozen=True)
class DJResult:
    kept: list[dict[str, Any]]  # Data-Juicer's output rows in its order (= input order for filters)
    dropped: dict[str, list[dict[str, Any]]]  # op name -> traced dropped samples {"id": ..., "stats": {...}}
    error_lines: list[str]  # ERROR lines of Data-Juicer's log (op errors it swallowed)
    seconds: float


def check_environment(ops: list[dict[str, dict[str, Any]]] = ()) -> None:
    """Fail with one line if Data-Juicer would try to pip-install something at run time."""
    needed = dict.fromkeys(REQUIRED_MODULES)
    for op in ops:
        for name in op:
            needed.update(dict.fromkeys(OP_MODULES.get(name, ())))
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        ops_named = sorted({name for op in ops for name in op if set(OP_MODULES.get(name, ())) & set(missing)})
        why = f" (needed by {', '.join(ops_named)})" if ops_named else " (Data-Juicer imports ray and torch)"
        raise KoloraError(
            f"the filter stage needs {', '.join(missing)} installed{why}; Data-Juicer would otherwise pip-install it at "
            f"run time: pip install {' '.join(PIP_NAMES.get(m, m) for m in missing)}"
        )


def effective_np(requested: int) -> int:
    return max(1, min(requested, os.cpu_count() or 1))


def dj_config(
    input_jsonl: Path,
    export_path: Path,
    ops: list[dict[str, dict[str, Any]]],
    np: int,
    trace_num: int,
    cache_dir: Path,
    executor_type: str = "default",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """The seed's Data-Juicer config, plus tracing of every dropped sample and a private datasets cache."""
    cfg: dict[str, Any] = {
        "project_name": "kolora-filter",
        "dataset_path": str(input_jsonl),
        "export_path": str(export_path),
        "np": effective_np(np),
        "text_keys": "text",
        "image_key": "image",
        "image_special_token": IMAGE_TOKEN,
        "process": ops,
        "open_tracer": True,
        "trace_num": max(trace_num, 1),
        "ds_cache_dir": str(cache_dir),
        "executor_type": executor_type,
    }
    if ray_address:
        cfg["ray_address"] = ray_address
    return cfg


def _error_lines(log_path: Path) -> list[str]:
    lines = []
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "| ERROR" in line or line.startswith(("Traceback", "KOLORA_DJ")) or "Error:" in line:
                lines.append(line.strip())
    return lines


def _strip_tokens(text: str) -> str:
    return " ".join(text.replace(IMAGE_TOKEN, " ").replace(EOC_TOKEN, " ").split())


def _read_export(export_path: Path) -> list[dict[str, Any]]:
    """Data-Juicer's kept rows: {"id", "text" (special tokens removed), "image": [path, ...]}."""
    if export_path.is_dir():  # the Ray executor writes a directory of shards
        files = sorted(p for p in export_path.rglob("*.json*") if p.is_file())
    elif export_path.is_file():
        files = [export_path]
    else:
        raise KoloraError(f"Data-Juicer exited 0 but wrote no {export_path.name}: see the log lines above")
    rows = []
    for file in files:
        with open(file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows.append({"id": row["id"], "text": _strip_tokens(row.get("text", "")), "image": row.get("image") or []})
    return rows


def _read_traces(work_dir: Path) -> dict[str, list[dict[str, Any]]]:
    dropped: dict[str, list[dict[str, Any]]] = {}
    for trace in sorted(work_dir.rglob("sample_trace-*.jsonl")):
        op = trace.stem.removeprefix("sample_trace-")
        with open(trace, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    dropped.setdefault(op, []).append({"id": row.get("id"), "stats": row.get(STATS_KEY) or {}})
    return dropped


class _DJProgress:
    """Data-Juicer's own progress, surfaced as kolora log lines while it runs.

    Read from its output: each op's "OP [name] Done in 1.1s. Left 23 samples." (always logged) and the tqdm
    bars of the datasets maps it runs per op ("image_shape_filter_compute_stats (num_proc=2):  50%|..| 20/40"),
    logged at most every `every_s` seconds, so a long op shows where it is and a short one stays quiet.
    """

    OP_DONE = re.compile(r"OP \[(?P<op>[^\]]+)\] Done in (?P<seconds>[\d.]+)s\. Left (?P<left>\d+) samples")
    BAR = re.compile(r"^(?P<what>[^:|]+?)(?: \(num_proc=\d+\))?:\s+\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)")

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s, self.last = every_s, time.monotonic()

    def see(self, line: str) -> None:
        if done := self.OP_DONE.search(line):
            log.info("filter: Data-Juicer %s done in %s s, %s images left", done["op"], done["seconds"], done["left"])
        elif (bar := self.BAR.search(line)) and time.monotonic() - self.last >= self.every_s and bar["done"] != bar["total"]:
            self.last = time.monotonic()
            log.info("filter: Data-Juicer %s: %s/%s images", bar["what"].strip(), bar["done"], bar["total"])


def _run_child(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, roots: dict[str, str]) -> int:
    """Run Data-Juicer's child, its output kept in `log_path` (bar updates on lines of their own) and read live.

    The log is an artifact: the absolute `roots` (work dir, images dir) it mentions are written as their names.
    """
    progress = _DJProgress()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        pending = b""
        while chunk := proc.stdout.read1(1 << 16):
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            for raw in lines:
                if raw.strip():
                    line = raw.decode("utf-8", errors="replace")
                    for root, name in roots.items():
                        line = line.replace(root, name)
                    out.write(line + "\n")
                    progress.see(line)
        if pending.strip():
            out.write(pending.decode("utf-8", errors="replace") + "\n")
    return proc.wait()


def run_datajuicer(
    samples: list[Sample],
    ops: list[dict[str, dict[str, Any]]],
    np: int,
    work_dir: Path,
    log_path: Path,
    executor_type: str = "default",
    ray_address: str | None = None,
) -> DJResult:
    """Run the recipe on `samples` (already opened and verified) inside `work_dir`, its log kept in `log_path`."""
    check_environment(ops)
    work_dir.mkdir(parents=True, exist_ok=True)
    input_jsonl = work_dir / "input.jsonl"
    with open(input_jsonl, "w", encoding="utf-8") as f:
        for s in samples:
            row = {"id": s.id, "text": f"{IMAGE_TOKEN} {s.text}", "image": [str(s.image)]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    export_path = work_dir / "output" / "result.jsonl"
    cfg = dj_config(input_jsonl, export_path, ops, np, len(samples) + 1, work_dir / "hf-cache", executor_type, ray_address)
    cfg_path = work_dir / "dj_config.json"
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("TQDM_DISABLE", None)  # its progress bars are what `_DJProgress` reads (the stage shell turns bars off)
    log.info("filter: Data-Juicer on %d images, %d ops, np=%d (%s executor)", len(samples), len(ops), cfg["np"], executor_type)
    started = time.perf_counter()
    roots = {str(work_dir): "<work>", os.path.commonpath([str(s.image.parent) for s in samples]): "<images>"}
    returncode = _run_child([sys.executable, "-m", "kolora_core.data.datajuicer", str(cfg_path)], work_dir, env, log_path, roots)
    seconds = time.perf_counter() - started
    errors = _error_lines(log_path)
    if returncode != 0:
        causes = [line.removeprefix(CAUSE_MARKER) for line in errors if line.startswith(CAUSE_MARKER)]
        if not causes:  # no cause of its own: its last lines are all there is to go on (with a cause, they bury it)
            for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]:
                log.error("datajuicer: %s", line)
        last = causes[-1] if causes else errors[-1] if errors else f"exit code {returncode}"
        hint = "; fix filter.ops" if last.startswith(("PipelineConfigError", "PipelineRuntimeError")) else ""
        raise KoloraError(f"Data-Juicer failed (exit {returncode}) after {seconds:.0f} s: {last[:500]}{hint}")
    return DJResult(_read_export(export_path), _read_traces(work_dir), errors, seconds)


def _child_main(cfg_path: str) -> int:
    """Runs in the child process: import guard, then Data-Juicer's Python API."""
    try:
        import ray  # noqa: F401 - must import before data_juicer, or it pip-installs
        import torch  # noqa: F401
    except ImportError as exc:
        print(f"KOLORA_DJ_MISSING: {exc}: install ray and torch; Data-Juicer would pip-install them", flush=True)
        return 3
    from data_juicer.config import get_init_configs
    from data_juicer.core.executor.factory import ExecutorFactory

    with open(cfg_path, encoding="utf-8") as f:
        cfg_dict = json.load(f)
    try:
        cfg = get_init_configs(cfg_dict, load_configs_only=False)
        executor = ExecutorFactory.create_executor(cfg_dict.get("executor_type", "default"))(cfg)
        executor.run()
    except Exception as exc:  # re-raised: its cause on one marked line for the parent, then the traceback
        print(f"{CAUSE_MARKER}{cause_line(exc)}", flush=True)
        raise
    return 0


def cause_line(exc: BaseException) -> str:
    """An exception as one line; Data-Juicer's preflight errors as their list (its message spans lines and ends
    with advice about a setting kolora does not expose)."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return f"{type(exc).__name__}: " + "; ".join(" ".join(str(e).split()) for e in errors)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
