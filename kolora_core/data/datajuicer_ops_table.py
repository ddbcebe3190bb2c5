"""Write the table of Data-Juicer ops the config checks `filter.ops` against, from the installed Data-Juicer.

    python -m kolora_core.data.datajuicer_ops_table            # rewrites kolora_core/config/datajuicer_ops.json
    python -m kolora_core.data.datajuicer_ops_table --output F # writes F instead (the drift test compares the two)

Run it after changing the pinned py-data-juicer version, and commit the table. It takes the parameter names from
Data-Juicer's own preflight function (`_get_valid_params`, private: the pin keeps it where it is), so the table holds
exactly what Data-Juicer refuses or accepts when the filter stage runs it (`kolora_core.config.datajuicer_ops`).
It runs as a process of its own: importing Data-Juicer changes process-wide state (Pillow's truncated-image loading).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kolora_core.config.datajuicer_ops import TABLE
from kolora_core.data.datajuicer import check_environment
from kolora_core.data.layout import write_json

WRITER = "python -m kolora_core.data.datajuicer_ops_table"


def ops_table() -> dict[str, Any]:
    """Every registered op and the parameters Data-Juicer's preflight accepts for it, those of the OP base apart."""
    check_environment()  # missing ray or torch: Data-Juicer would pip-install them while importing
    import ray  # noqa: F401 - before data_juicer, as the filter stage's child imports them
    import torch  # noqa: F401
    from data_juicer.core.preflight import _get_valid_params
    from data_juicer.ops.base_op import OP, OPERATORS

    common = sorted(OP._BASE_PARAMS)
    ops = {name: sorted(set(_get_valid_params(cls)) - set(common)) for name, cls in sorted(OPERATORS.modules.items())}
    return {"data_juicer": version("py-data-juicer"), "written_by": WRITER, "common_parameters": common, "ops": ops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=WRITER, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=TABLE, help=f"where to write it (default: {TABLE})")
    args = parser.parse_args(argv)
    table = ops_table()
    partial = args.output.with_name(f".{args.output.name}.partial")
    write_json(partial, table)
    os.replace(partial, args.output)
    print(f"{args.output}: {len(table['ops'])} ops of Data-Juicer {table['data_juicer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
