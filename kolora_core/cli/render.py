"""`kolora render`: write the Argo WorkflowTemplate, Workflow and CronWorkflow YAML (workflows/dist/).

The same command as `python -m workflows.render`; the options are defined in `workflows/render.py`.
"""

from __future__ import annotations

import argparse

from workflows import render


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render the Argo workflow YAML (WorkflowTemplate, one-off Workflow, nightly CronWorkflow)",
        description=render.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_arguments(parser)
    parser.set_defaults(func=render.run)
