"""The committed table of Data-Juicer ops (what the config checks `filter.ops` against) is the installed Data-Juicer's.

The table is written by `python -m kolora_core.data.datajuicer_ops_table` from Data-Juicer's registry and its own
preflight check; after a change of the pinned py-data-juicer (or of the writer) this fails until the table is
rewritten and committed. The writer runs as its own process, as the filter stage's Data-Juicer does: importing
Data-Juicer here would turn on Pillow's truncated-image loading for every test after this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from kolora_core.config.datajuicer_ops import TABLE, check_op

ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import json, sys\n"
    "from data_juicer.core.preflight import PipelineConfigError, pre_instantiation_check\n"
    "for op in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        pre_instantiation_check([op])\n"
    "    except PipelineConfigError as exc:\n"
    "        print('refused', exc.errors[0])\n"
    "    else:\n"
    "        print('accepted')\n"
)


def test_the_committed_table_is_the_installed_data_juicers(tmp_path: Path) -> None:
    written = tmp_path / "datajuicer_ops.json"
    writer = [sys.executable, "-m", "kolora_core.data.datajuicer_ops_table", "--output", str(written)]
    done = subprocess.run(writer, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"{written}: ") and f" ops of Data-Juicer {version('py-data-juicer')}" in done.stdout
    installed, committed = json.loads(written.read_text(encoding="utf-8")), json.loads(TABLE.read_text(encoding="utf-8"))
    assert installed["data_juicer"] == committed["data_juicer"], "py-data-juicer's pin changed: rewrite the table"
    ops = installed["ops"].keys() | committed["ops"].keys()
    changed = sorted(name for name in ops if installed["ops"].get(name) != committed["ops"].get(name))
    assert installed == committed, f"ops {changed} differ from the installed Data-Juicer's: rerun {installed['written_by']}"
    assert written.read_bytes() == TABLE.read_bytes(), "committed as the writer writes it (a diff shows what changed)"


def test_the_config_accepts_and_refuses_what_data_juicers_preflight_does() -> None:
    """The same recipes through kolora's check and through Data-Juicer's own, which the filter stage runs."""
    ops = [
        {"image_shape_filter": {"min_width": 8, "num_proc": 2, "reversed_range": True}},
        {"image_shape_filter": {"min_widht": 8}},
        {"image_shap_filter": {}},
        {"image_deduplicator": {"method": "phash", "text_key": "text"}},
        {"image_deduplicator": {"reversed_range": True}},  # a Filter's parameter, not a Deduplicator's
        {"image_aesthetics_filter": {"hf_scorer_model": "/models/x", "min_score": 0.5, "mem_required": "1GB"}},
    ]
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(ops)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = done.stdout.splitlines()[-len(ops) :]
    ours = []
    for op in ops:
        try:
            check_op(op)
        except ValueError as exc:
            ours.append(f"refused {exc}")
        else:
            ours.append("accepted")
    assert [line.split()[0] for line in ours] == [line.split()[0] for line in theirs], list(zip(ours, theirs, strict=True))
    assert [line.split()[0] for line in ours] == ["accepted", "refused", "refused", "accepted", "refused", "accepted"]
