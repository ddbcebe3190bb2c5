"""The Data-Juicer ops `filter.ops` may name, and the parameters each takes, for the pinned Data-Juicer version.

Why a committed table: a recipe is checked where the config is read (`kolora config`, `kolora run`, `kolora submit`
from a laptop, every stage), so that a typo is one line before anything starts, not a failed filter step after
ingest; and the config layer must not import Data-Juicer (seconds to import, absent where only the CLI is installed).

What it holds is what Data-Juicer's own preflight check accepts (`data_juicer.core.preflight`, which the filter
stage's Data-Juicer runs before it builds the ops): the registry's op names, and per op the named parameters of
the `__init__` of every class it inherits from plus the `_BASE_PARAMS` those classes declare (`text_key`,
`batch_size`, `num_proc`, `mem_required`...). Names are what must be checked: an op's `**kwargs` go to its base
class, which ignores the names it does not know, so unchecked, a misspelt limit runs with its default. Values are
left to that preflight (it checks the simple types). `python -m kolora_core.data.datajuicer_ops_table` writes the
table from the installed Data-Juicer; tests/data/test_datajuicer_ops_table.py fails when the two differ.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("datajuicer_ops.json")
LISTED_IN = "kolora_core/config/datajuicer_ops.json"  # as a user of the repository finds it


@dataclass(frozen=True)
class DataJuicerOps:
    version: str
    common: tuple[str, ...]  # the parameters every op takes (Data-Juicer's OP base class)
    own: dict[str, tuple[str, ...]]  # op name -> the parameters it takes besides `common`


@functools.cache
def datajuicer_ops() -> DataJuicerOps:
    """The committed table, read once, when the first recipe is checked."""
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    own = {name: tuple(params) for name, params in table["ops"].items()}
    return DataJuicerOps(table["data_juicer"], tuple(table["common_parameters"]), own)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_op(op: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One `filter.ops` item as Data-Juicer's preflight would judge its names; a ValueError says what to write instead."""
    if len(op) != 1:
        raise ValueError(f"must map exactly one op name to its arguments, got {sorted(op)}")
    ((name, args),) = op.items()
    ops = datajuicer_ops()
    if name not in ops.own:
        hint = _did_you_mean(name, list(ops.own)) or f": name one of its ops ({LISTED_IN} lists them)"
        raise ValueError(f"'{name}' is not a Data-Juicer {ops.version} op{hint}")
    takes = ops.own[name] + ops.common
    for param in args:
        if param not in takes:
            hint = _did_you_mean(param, takes) or (
                f": it takes {', '.join(ops.own[name]) or 'none of its own'}, besides those every op takes "
                f"({LISTED_IN} lists them)"
            )
            raise ValueError(f"{name} has no parameter '{param}' in Data-Juicer {ops.version}{hint}")
    return op
